"""Configuration of a text VAE: architecture and special token ids only (`TextVAEConfig`).

The saved `config.json` is the single source of truth for a trained model: nothing re-declares an
architecture hyperparameter at load time.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from .architecture import (
    DECODER_TYPES,
    ENCODER_TYPES,
    OUTPUT_LAYERS,
    POOLING_TYPES,
    POSITION_TYPES,
    RNN_TYPES,
    default_adaptive_cutoffs,
)


class TextVAEConfig(PretrainedConfig):
    """Architecture of a `TextVAEModel`.

    Recurrent encoders read the sentence and summarise it in their last hidden state; a linear head maps
    it to `mu` and `logvar` of a diagonal Gaussian of size `latent_dim`. The decoder is an autoregressive
    language model conditioned on `z` (He et al. 2019: through the initial state and at every input).
    `latent_dim=0` removes the encoder and gives the plain language model every VAE table needs.
    `output_layer="adaptive"` replaces the decoder's full softmax by an adaptive softmax (Grave et al. 2017)
    with `adaptive_cutoffs` (resolved from the vocabulary size when None, `default_adaptive_cutoffs`).
    """

    model_type = "textvae"

    def __init__(
        self,
        vocab_size: int = 10002,
        embedding_size: int = 256,
        hidden_size: int = 256,
        latent_dim: int = 32,
        deterministic: bool = False,
        encoder_hidden_size: int | None = None,
        encoder_type: str = "lstm",
        decoder_type: str = "lstm",
        encoder_num_layers: int = 1,
        decoder_num_layers: int = 1,
        bidirectional_encoder: bool | None = None,
        encoder_pooling: str = "mean",
        tie_embeddings: bool = False,
        output_layer: str = "full",
        adaptive_cutoffs: list[int] | None = None,
        decoder_input_dropout: float = 0.5,
        decoder_output_dropout: float = 0.5,
        z_to_initial_state: bool = True,
        z_to_inputs: bool = True,
        z_to_memory: bool = True,
        z_to_output: bool | None = None,
        bag_of_words_loss: float | None = None,
        posterior_mean_batchnorm: float = 0.0,
        num_attention_heads: int = 4,
        intermediate_size: int = 1024,
        max_position_embeddings: int = 256,
        position_embedding_type: str = "learned",
        transformer_dropout: float = 0.1,
        encoder_name_or_path: str | None = None,
        decoder_name_or_path: str | None = None,
        encoder_backbone_config: dict | None = None,
        decoder_backbone_config: dict | None = None,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        unk_token_id: int = 3,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.latent_dim = latent_dim
        self.deterministic = deterministic
        self.encoder_hidden_size = encoder_hidden_size
        self.encoder_type = encoder_type
        self.decoder_type = decoder_type
        self.encoder_num_layers = encoder_num_layers
        self.decoder_num_layers = decoder_num_layers
        # None: the default that reads z best for this architecture (README, "What makes z carry the
        # sentence"): a bidirectional recurrent encoder, z fed to every output state of a recurrent decoder
        # (Dieng et al. 2019) and the bag-of-words loss (Zhao et al. 2017). Resolved here, so config.json
        # always holds the value the model was built with.
        recurrent_decoder = decoder_type in RNN_TYPES and latent_dim != 0
        if bidirectional_encoder is None:
            bidirectional_encoder = encoder_type in RNN_TYPES and latent_dim != 0
        if z_to_output is None:
            z_to_output = recurrent_decoder
        if bag_of_words_loss is None:
            bag_of_words_loss = 1.0 if latent_dim != 0 else 0.0
        self.bidirectional_encoder = bidirectional_encoder
        self.encoder_pooling = encoder_pooling
        self.tie_embeddings = tie_embeddings
        self.output_layer = output_layer
        if isinstance(adaptive_cutoffs, tuple):
            adaptive_cutoffs = list(adaptive_cutoffs)  # as config.json gives it back
        if (
            adaptive_cutoffs is None
            and output_layer == "adaptive"
            and isinstance(vocab_size, int)
            and not isinstance(vocab_size, bool)
        ):
            # Resolved here, so config.json records the cut-offs the model was built with and a saved model
            # is rebuilt exactly whatever the rule becomes (see `default_adaptive_cutoffs`).
            adaptive_cutoffs = default_adaptive_cutoffs(vocab_size)
        self.adaptive_cutoffs = adaptive_cutoffs
        self.decoder_input_dropout = decoder_input_dropout
        self.decoder_output_dropout = decoder_output_dropout
        self.z_to_initial_state = z_to_initial_state
        self.z_to_inputs = z_to_inputs
        self.z_to_memory = z_to_memory
        self.z_to_output = z_to_output
        self.bag_of_words_loss = bag_of_words_loss
        self.posterior_mean_batchnorm = posterior_mean_batchnorm
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding_type = position_embedding_type
        self.transformer_dropout = transformer_dropout
        self.encoder_name_or_path = encoder_name_or_path
        self.decoder_name_or_path = decoder_name_or_path
        # The pretrained backbones' own configs (`to_dict()`), stored so that a saved model rebuilds its
        # backbones from config.json alone, with no network (see `textvae.backbones`).
        self.encoder_backbone_config = encoder_backbone_config
        self.decoder_backbone_config = decoder_backbone_config
        self.unk_token_id = unk_token_id
        # Tying is done by the model itself (see `tie_embeddings`), never by transformers' generic tying.
        kwargs["tie_word_embeddings"] = False
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs
        )
        self.validate_architecture()

    @property
    def has_latent(self) -> bool:
        """True for a VAE (or a deterministic autoencoder), False for the language model with no latent."""
        return self.latent_dim > 0

    @property
    def has_posterior(self) -> bool:
        """True for a VAE, whose encoder gives a Gaussian q(z | x): KL, NLL and MI apply. False for a
        language model and for a deterministic autoencoder (z is a point)."""
        return self.has_latent and not self.deterministic

    def validate_architecture(self) -> None:
        """Raise `ValueError` naming the first option whose value cannot build a model."""
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(f"encoder_type must be one of {ENCODER_TYPES}, got {self.encoder_type!r}")
        if self.decoder_type not in DECODER_TYPES:
            raise ValueError(f"decoder_type must be one of {DECODER_TYPES}, got {self.decoder_type!r}")
        if self.encoder_pooling not in POOLING_TYPES:
            raise ValueError(f"encoder_pooling must be one of {POOLING_TYPES}, got {self.encoder_pooling!r}")
        if self.position_embedding_type not in POSITION_TYPES:
            raise ValueError(
                f"position_embedding_type must be one of {POSITION_TYPES}, got {self.position_embedding_type!r}"
            )
        positive = ["vocab_size", "embedding_size", "hidden_size", "encoder_num_layers", "decoder_num_layers"]
        if self.encoder_hidden_size is not None:  # None: the encoder takes hidden_size
            positive.append("encoder_hidden_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.encoder_hidden_size is not None and self.encoder_type not in RNN_TYPES:
            raise ValueError(f"encoder_hidden_size applies to lstm / gru encoders, not {self.encoder_type!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < 0:
            raise ValueError(f"latent_dim must be a non-negative integer, got {self.latent_dim!r}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic must be true or false, got {self.deterministic!r}")
        if self.deterministic and not self.has_latent:
            raise ValueError(
                "deterministic is an autoencoder's option: a language model (latent_dim 0) has no z"
            )
        if self.deterministic and self.posterior_mean_batchnorm:
            raise ValueError(
                "posterior_mean_batchnorm (BN-VAE) holds a KL open: a deterministic model has none"
            )
        if self.z_to_output and self.decoder_type not in RNN_TYPES:
            raise ValueError(f"z_to_output applies to lstm / gru decoders, not {self.decoder_type!r}")
        if not isinstance(self.bag_of_words_loss, (int, float)) or not 0.0 <= self.bag_of_words_loss < float(
            "inf"
        ):
            raise ValueError(
                f"bag_of_words_loss must be a finite number >= 0, got {self.bag_of_words_loss!r}"
            )
        self._validate_output_layer()
        for name in ("decoder_input_dropout", "decoder_output_dropout", "transformer_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if (
            "transformer" in (self.encoder_type, self.decoder_type)
            and self.hidden_size % self.num_attention_heads
        ):
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.encoder_type == "hf" and self.has_latent and not self.encoder_name_or_path:
            raise ValueError("encoder_type 'hf' needs encoder_name_or_path")
        if self.decoder_type == "hf" and not self.decoder_name_or_path:
            raise ValueError("decoder_type 'hf' needs decoder_name_or_path")
        for name in ("encoder_backbone_config", "decoder_backbone_config"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, dict) and "model_type" in value):
                raise ValueError(f"{name} must be a backbone config dict with a model_type, got {value!r}")

    def _validate_output_layer(self) -> None:
        """`ValueError` for an output layer (`output_layer`, `adaptive_cutoffs`) that cannot be built."""
        if self.output_layer not in OUTPUT_LAYERS:
            raise ValueError(f"output_layer must be one of {OUTPUT_LAYERS}, got {self.output_layer!r}")
        cutoffs = self.adaptive_cutoffs
        if self.output_layer != "adaptive":
            if cutoffs is not None:
                raise ValueError(
                    f"adaptive_cutoffs applies to output_layer 'adaptive', not {self.output_layer!r}"
                )
            return
        if self.decoder_type == "hf":
            raise ValueError(
                "output_layer 'adaptive' is for lstm / gru / transformer decoders: a pretrained (hf) decoder "
                "keeps its own output layer (its language-model head)"
            )
        if self.tie_embeddings:
            # Tying would need one matrix to be both the input embedding and the head's word rows, while
            # the tail clusters project to narrower sizes than the embedding (adaptive input embeddings,
            # Baevski & Auli 2019, would be the way): not supported.
            raise ValueError(
                "tie_embeddings and output_layer 'adaptive' conflict: the adaptive softmax's clusters have "
                "no single output matrix to tie to the input embedding"
            )
        if self.vocab_size < 2:
            raise ValueError(
                f"output_layer 'adaptive' needs a vocabulary of at least 2 tokens, got {self.vocab_size}"
            )
        if not isinstance(cutoffs, list) or not cutoffs:
            raise ValueError(
                f"adaptive_cutoffs must be a non-empty list of increasing integers between 0 and vocab_size "
                f"({self.vocab_size}), got {cutoffs!r}"
            )
        if any(not isinstance(cutoff, int) or isinstance(cutoff, bool) for cutoff in cutoffs):
            raise ValueError(f"adaptive_cutoffs must be integers, got {cutoffs!r}")
        if min(cutoffs) < 1:
            raise ValueError(f"adaptive_cutoffs must be positive, got {cutoffs!r}")
        if any(later <= earlier for earlier, later in zip(cutoffs, cutoffs[1:], strict=False)):
            raise ValueError(f"adaptive_cutoffs must be strictly increasing, got {cutoffs!r}")
        if cutoffs[-1] >= self.vocab_size:
            raise ValueError(
                f"adaptive_cutoffs must be below vocab_size ({self.vocab_size}): the last cluster needs a "
                f"token, got {cutoffs!r}"
            )
