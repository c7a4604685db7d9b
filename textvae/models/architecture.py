"""The architecture options of a text VAE as one table (type, default, help), importable without torch.

`TextVAEConfig` takes these options (and a test checks that its signature agrees with this table); the
command line builds its model flags from the table, and training options are type-checked against it
before anything heavy (torch, transformers) is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RNN_TYPES = ("lstm", "gru")
ENCODER_TYPES = (*RNN_TYPES, "transformer", "hf")
DECODER_TYPES = (*RNN_TYPES, "transformer", "hf")
POOLING_TYPES = ("mean", "summary")
POSITION_TYPES = ("learned", "sinusoidal")
OUTPUT_LAYERS = ("full", "adaptive")


# Adaptive softmax (Grave et al. 2017): the default head holds this many of the most frequent ids, and each
# cluster after it is ADAPTIVE_GROWTH times wider than the one before.
ADAPTIVE_HEAD_SIZE = 2000
ADAPTIVE_GROWTH = 4


def default_adaptive_cutoffs(vocab_size: int) -> list[int]:
    """The adaptive softmax's cluster boundaries for `adaptive_cutoffs=None`, from the vocabulary size alone.

    The word tokenizer numbers words by decreasing frequency after the four special tokens, so an id's
    rank is its frequency rank. The head takes the first `min(2000, vocab_size // 5)` ids (at least one):
    by Zipf's law the 2000 most frequent words cover most running text (Grave et al. 2017 use heads of a
    few thousand words), and a small vocabulary keeps a fifth of it in the head. The clusters after it are
    each 4 times wider than the one before, up to the vocabulary size: [2000, 8000] for 10k words,
    [2000, 8000, 32000] for 50k, [4, 16] for 20. Since `div_value` 4 gives cluster i a projection 4^(i+1)
    times narrower than the hidden state, every cluster's output matrix then costs about the same. The
    rule gives valid cut-offs (increasing, strictly between 0 and `vocab_size`) for any `vocab_size >= 2`.
    A tokenizer whose ids are not frequency-ordered (a pretrained BPE) still gets an exact distribution,
    only a less efficient split.
    """
    head = min(ADAPTIVE_HEAD_SIZE, max(1, vocab_size // 5))
    cutoffs = []
    while head < vocab_size:
        cutoffs.append(head)
        head *= ADAPTIVE_GROWTH
    return cutoffs


@dataclass(frozen=True)
class ArchitectureOption:
    """One architecture option: its type as written in `TextVAEConfig.__init__`, default and help."""

    type: str
    default: Any
    help: str


# The options a user sets (the command line has one flag each, vocab_size aside: the tokenizer sets it).
ARCHITECTURE_OPTIONS: dict[str, ArchitectureOption] = {
    "vocab_size": ArchitectureOption(
        "int", 10002, "size of the vocabulary (set from the tokenizer when training)"
    ),
    "embedding_size": ArchitectureOption("int", 256, "size of the token embeddings"),
    "hidden_size": ArchitectureOption("int", 256, "size of the recurrent state / transformer width"),
    "latent_dim": ArchitectureOption(
        "int", 32, "size of the latent z; 0 gives the language model with no latent"
    ),
    "deterministic": ArchitectureOption(
        "bool",
        False,
        "a deterministic autoencoder of the same architecture: z is the encoder's output (no sampling, no "
        "KL term), the ceiling of what the network can reconstruct; NLL and KL do not apply (N/A), and "
        "samples come from the aggregate prior fitted to the training codes (Ghosh et al. 2020)",
    ),
    "encoder_hidden_size": ArchitectureOption(
        "int | None",
        None,
        "size of a recurrent encoder's state when it differs from the decoder's; None: hidden_size",
    ),
    "encoder_type": ArchitectureOption(
        "str", "lstm", f"encoder architecture, one of {', '.join(ENCODER_TYPES)}"
    ),
    "decoder_type": ArchitectureOption(
        "str", "lstm", f"decoder architecture, one of {', '.join(DECODER_TYPES)}"
    ),
    "encoder_num_layers": ArchitectureOption("int", 1, "number of encoder layers"),
    "decoder_num_layers": ArchitectureOption("int", 1, "number of decoder layers"),
    "bidirectional_encoder": ArchitectureOption(
        "bool | None",
        None,
        "run the recurrent encoder in both directions (default: yes for an lstm / gru encoder of a VAE, "
        "which reconstructs better: README, 'What makes z carry the sentence')",
    ),
    "encoder_pooling": ArchitectureOption(
        "str", "mean", "transformer encoder pooling to mu/logvar: mean or summary (a learned first token)"
    ),
    "tie_embeddings": ArchitectureOption(
        "bool", False, "tie the decoder's input embedding and output projection (Press & Wolf 2017)"
    ),
    "output_layer": ArchitectureOption(
        "str",
        "full",
        "the decoder's output distribution: full (one softmax over the vocabulary) or adaptive (Grave et al. "
        "2017's adaptive softmax: frequent words in a small head, rarer ones in clusters of smaller "
        "projections; still exact and normalised, so NLL and PPL compare, at a fraction of the FLOPs; "
        "lstm / gru / transformer decoders, without tie_embeddings)",
    ),
    "adaptive_cutoffs": ArchitectureOption(
        "list[int] | None",
        None,
        "output_layer adaptive: the cluster boundaries, increasing token ids strictly between 0 and the "
        "vocabulary size, comma-separated on the command line (2000,8000: ids below 2000 in the head, "
        "2000-7999 one cluster, the rest another); ids are frequency-ordered by the word tokenizer "
        "(default: a head of the 2000 most frequent ids, or the first fifth of a smaller vocabulary, then "
        "clusters each 4 times wider, up to the vocabulary size; config.json records the cut-offs used)",
    ),
    "decoder_input_dropout": ArchitectureOption(
        "float", 0.5, "dropout on the decoder's input embeddings (He et al. 2019 use 0.5)"
    ),
    "decoder_output_dropout": ArchitectureOption(
        "float", 0.5, "dropout on the decoder's outputs before the vocabulary projection"
    ),
    "z_to_initial_state": ArchitectureOption(
        "bool", True, "condition the recurrent decoder on z through its initial state"
    ),
    "z_to_inputs": ArchitectureOption(
        "bool",
        True,
        "condition the decoder on z at every position (concatenated for RNNs, added for transformers)",
    ),
    "z_to_memory": ArchitectureOption(
        "bool",
        True,
        "transformer decoder: every position attends to a memory vector projected from z (Optimus)",
    ),
    "z_to_output": ArchitectureOption(
        "bool | None",
        None,
        "recurrent decoder: also add a projection of z to every output state before the vocabulary "
        "projection, a skip connection from z past the recurrence (Dieng et al. 2019) (default: yes for "
        "an lstm / gru decoder of a VAE)",
    ),
    "bag_of_words_loss": ArchitectureOption(
        "float | None",
        None,
        "weight of the bag-of-words loss (Zhao et al. 2017): an MLP predicts every word of the sentence "
        "from z alone, order ignored, which makes z carry the words; a training loss only, never in "
        "rec or NLL; 0 disables (default: 1.0 for a VAE, 0 for a language model)",
    ),
    "posterior_mean_batchnorm": ArchitectureOption(
        "float",
        0.0,
        "BN-VAE (Zhu et al. 2020): batch-normalise mu with this fixed scale gamma, which keeps "
        "the expected KL above latent_dim * gamma^2 / 2; 0 disables",
    ),
    "num_attention_heads": ArchitectureOption("int", 4, "attention heads of the transformer layers"),
    "intermediate_size": ArchitectureOption("int", 1024, "feed-forward size of the transformer layers"),
    "max_position_embeddings": ArchitectureOption(
        "int", 256, "longest sequence the transformer layers accept"
    ),
    "position_embedding_type": ArchitectureOption(
        "str", "learned", f"transformer positions, one of {', '.join(POSITION_TYPES)}"
    ),
    "transformer_dropout": ArchitectureOption(
        "float", 0.1, "dropout on attention weights and residual branches of the transformer layers"
    ),
    "encoder_name_or_path": ArchitectureOption(
        "str | None", None, "pretrained encoder (Hub id or folder) when encoder_type is hf"
    ),
    "decoder_name_or_path": ArchitectureOption(
        "str | None", None, "pretrained causal language model (Hub id or folder) when decoder_type is hf"
    ),
}
