"""Pretrained Hugging Face backbones as encoder (BERT-like) and decoder (GPT-2-like), joined by z as in Optimus.

Optimus (Li et al. 2020) encodes with BERT and decodes with GPT-2; `z` reaches the decoder twice: as
one extra key/value pair in every layer that every position attends to ("memory"), and added to every
input embedding ("embedding"). `config.z_to_memory` and `config.z_to_inputs` choose them here.

A saved model needs no network: the backbones' own configs are stored in `TextVAEConfig`
(`encoder_backbone_config`, `decoder_backbone_config`) and the backbones are built from them. Training
code calls, in this order:

1. `load_backbone_tokenizer(name)` for the decoder's tokenizer (and the encoder's own tokenizer);
2. `backbone_config_overrides(config_kwargs)`: the TextVAEConfig fields the backbones dictate;
3. `TextVAEModel(TextVAEConfig(**kwargs))`, which builds the backbones with random weights;
4. `load_pretrained_backbones(model)`, once, for a new model: copies the pretrained weights in.

After that `save_pretrained` / `from_pretrained` carry everything in `config.json` and `model.safetensors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PretrainedConfig,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration import TextVAEConfig

logger = logging.getLogger(__name__)


def _load(loader: Callable, name_or_path: str, what: str):
    """`loader(name_or_path)`, with any failure (offline Hub, unknown id, bad folder) as one `ValueError`."""
    if not name_or_path:
        raise ValueError(f"no pretrained {what} given (empty name_or_path {name_or_path!r})")
    path = Path(name_or_path).expanduser()
    if str(name_or_path).startswith(("/", ".", "~")) and not path.is_dir():
        raise ValueError(f"pretrained {what} folder not found: {name_or_path}")
    try:
        return loader(name_or_path)
    except Exception as error:  # OSError, HTTP and offline-mode errors, ValueError: transformers raises many
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(
            f"could not load the pretrained {what} {name_or_path!r} ({reason}); give a local folder saved "
            f"with save_pretrained, or a Hugging Face Hub id with network access or already in the local cache"
        ) from None


def load_backbone_config(name_or_path: str) -> PretrainedConfig:
    """The `transformers` config of a pretrained model (Hub id or folder); `ValueError` if unavailable."""
    return _load(AutoConfig.from_pretrained, name_or_path, "model config")


def backbone_config_from_dict(config_dict: dict) -> PretrainedConfig:
    """A backbone config stored with `to_dict()` -> the config object, with no network access."""
    model_type = config_dict.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"unknown backbone model_type {model_type!r}: this transformers version cannot build it"
        )
    return CONFIG_MAPPING[model_type].from_dict(dict(config_dict))


def load_backbone_tokenizer(name_or_path: str):
    """The tokenizer of a pretrained model, with pad, bos and eos tokens set.

    BERT: bos = [CLS], eos = [SEP]. GPT-2 has one special token, `<|endoftext|>`, which becomes bos, eos
    and pad (padding is marked by attention masks, never by the pad id, so sharing it is harmless).
    """
    tokenizer = _load(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.cls_token if tokenizer.cls_token is not None else tokenizer.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token is None:
        raise ValueError(
            f"the tokenizer of {name_or_path!r} has no eos, sep or bos token to end sentences with"
        )
    return tokenizer


def backbone_config_overrides(config_kwargs: dict) -> dict:
    """TextVAEConfig fields set by the pretrained backbones named in `config_kwargs` (reads them by name).

    Returns the backbone configs as dicts, and for a pretrained decoder its vocabulary size and special
    token ids (from `load_backbone_tokenizer`), with the extra decoder dropouts defaulting to 0 (GPT-2
    has its own); when both parts are pretrained, `hidden_size` / `embedding_size` are the decoder's.
    Merge the result into `config_kwargs` before building `TextVAEConfig(**config_kwargs)`.
    """
    overrides: dict = {}
    has_latent = config_kwargs.get("latent_dim", TextVAEConfig().latent_dim) > 0
    encoder_hf = config_kwargs.get("encoder_type") == "hf" and has_latent
    if encoder_hf:
        name = _required_name(config_kwargs, "encoder")
        overrides["encoder_backbone_config"] = load_backbone_config(name).to_dict()
    if config_kwargs.get("decoder_type") == "hf":
        name = _required_name(config_kwargs, "decoder")
        backbone = load_backbone_config(name)
        tokenizer = load_backbone_tokenizer(name)
        if len(tokenizer) > backbone.vocab_size:
            raise ValueError(
                f"the tokenizer of {name!r} has {len(tokenizer)} tokens, more than the model's {backbone.vocab_size}"
            )
        overrides.update(
            decoder_backbone_config=backbone.to_dict(),
            vocab_size=backbone.vocab_size,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            unk_token_id=tokenizer.unk_token_id
            if tokenizer.unk_token_id is not None
            else tokenizer.eos_token_id,
        )
        for option in ("decoder_input_dropout", "decoder_output_dropout"):
            if option not in config_kwargs:
                overrides[option] = 0.0
        if encoder_hf or not has_latent:
            overrides.update(hidden_size=backbone.hidden_size, embedding_size=backbone.hidden_size)
    return overrides


def _required_name(config_kwargs: dict, part: str) -> str:
    name = config_kwargs.get(f"{part}_name_or_path")
    if not name:
        raise ValueError(f"{part}_type 'hf' needs {part}_name_or_path (a Hub id or a local folder)")
    return name


def _backbone_config(config: TextVAEConfig, part: str) -> PretrainedConfig:
    """The stored backbone config of `part` ("encoder" / "decoder"); read by name (and stored) if absent."""
    stored = getattr(config, f"{part}_backbone_config")
    if stored is not None:
        return backbone_config_from_dict(stored)
    name = getattr(config, f"{part}_name_or_path")
    backbone = load_backbone_config(name)
    # Stored so that the saved config.json rebuilds this backbone without the network.
    setattr(config, f"{part}_backbone_config", backbone.to_dict())
    return backbone


def load_pretrained_backbones(model: nn.Module) -> nn.Module:
    """Copy the pretrained weights of `model`'s hf encoder / decoder in from their names (in place).

    Call it once on a new model, before training; a model loaded with `from_pretrained` already has
    (its fine-tuned) weights and must not call it. Raises `ValueError` when a backbone cannot be loaded.
    """
    config = model.config
    if config.encoder_type == "hf" and getattr(model, "encoder", None) is not None:
        pretrained = _load(AutoModel.from_pretrained, config.encoder_name_or_path, "encoder")
        model.encoder.backbone.load_state_dict(pretrained.state_dict())
        logger.info("loaded the pretrained encoder %s", config.encoder_name_or_path)
    if config.decoder_type == "hf":
        pretrained = _load(AutoModelForCausalLM.from_pretrained, config.decoder_name_or_path, "decoder")
        model.decoder.backbone.load_state_dict(pretrained.state_dict())
        logger.info("loaded the pretrained decoder %s", config.decoder_name_or_path)
    return model


class PretrainedEncoder(nn.Module):
    """A pretrained encoder (`AutoModel`, e.g. BERT) pooled to one feature vector per sentence.

    `encoder_pooling="summary"` takes the [CLS] summary (the pooler output when the backbone has one, as
    Optimus does); `"mean"` averages the last layer over real tokens. `output_size` is the backbone's
    hidden size. Its input is the sentence in the backbone's own vocabulary (`encoder_input_ids`).
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        backbone_config = _backbone_config(config, "encoder")
        self.backbone = AutoModel.from_config(backbone_config)
        self.vocab_size = backbone_config.vocab_size
        self.pooling = config.encoder_pooling
        self.output_size = backbone_config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids in the backbone's vocabulary and mask -> (B, output_size) sentence features."""
        if input_ids.numel() and int(input_ids.max()) >= self.vocab_size:
            raise ValueError(
                f"encoder input id {int(input_ids.max())} is outside the pretrained encoder's vocabulary "
                f"({self.vocab_size}): pass encoder_input_ids from the encoder's own tokenizer"
            )
        output = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = output.last_hidden_state  # (B, T, H)
        if self.pooling == "summary":
            pooled = getattr(output, "pooler_output", None)
            return pooled if pooled is not None else hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class PretrainedDecoderState(NamedTuple):
    """State of a `PretrainedDecoder`: the backbone's key/value cache (memory slot from z first) and
    `length`, the tokens read so far, which is the position of the next token."""

    cache: DynamicCache
    length: int


class PretrainedDecoder(nn.Module):
    """A pretrained causal language model (`AutoModelForCausalLM`, e.g. GPT-2) conditioned on `z`.

    `z_to_memory`: `z` is projected to a key and a value per layer, put in the key/value cache before the
    first token, so every position attends to it (Optimus's "memory"). `z_to_inputs`: `W z` is added to
    every input embedding (Optimus's "embedding"). `project` is the backbone's LM head; the backbone keeps
    its own tying and dropout (`tie_embeddings` is not used; the decoder dropouts add to its own).
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        backbone_config = _backbone_config(config, "decoder")
        self.backbone = AutoModelForCausalLM.from_config(backbone_config)
        # `PreTrainedModel.post_init` collects tied weights (GPT-2's LM head is its input embedding) only from
        # direct children; declared here, `TextVAEModel` saves the tied matrix once and re-ties it on load.
        self.all_tied_weights_keys = {
            f"backbone.{target}": f"backbone.{source}"
            for target, source in self.backbone.all_tied_weights_keys.items()
        }
        text_config = self.backbone.config.get_text_config(decoder=True)
        self.num_layers = text_config.num_hidden_layers
        self.num_kv_heads = (
            getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        )
        self.head_size = getattr(text_config, "head_dim", None) or (
            text_config.hidden_size // text_config.num_attention_heads
        )
        # Longest sequence it reads (GPT-2: n_positions); decoding caps max_length by it.
        self.max_positions = getattr(text_config, "max_position_embeddings", None)
        memory_size = self.num_layers * 2 * self.num_kv_heads * self.head_size
        use_memory = config.has_latent and config.z_to_memory
        use_inputs = config.has_latent and config.z_to_inputs
        self.latent_to_memory = nn.Linear(config.latent_dim, memory_size) if use_memory else None
        self.latent_to_inputs = nn.Linear(config.latent_dim, text_config.hidden_size) if use_inputs else None
        self.input_dropout = nn.Dropout(config.decoder_input_dropout)
        self.output_dropout = nn.Dropout(config.decoder_output_dropout)

    def initial_state(self, z: torch.Tensor | None, batch_size: int) -> PretrainedDecoderState:
        """The state before the first token: a cache holding z's memory slot (or empty)."""
        if self.latent_to_memory is None:
            return PretrainedDecoderState(DynamicCache(config=self.backbone.config), 0)
        memory = self.latent_to_memory(z).view(
            batch_size, self.num_layers, 2, self.num_kv_heads, 1, self.head_size
        )
        layers = [(memory[:, i, 0], memory[:, i, 1]) for i in range(self.num_layers)]  # (B, heads, 1, d) each
        return PretrainedDecoderState(DynamicCache(layers, config=self.backbone.config), 0)

    def forward(self, input_ids: torch.Tensor, z: torch.Tensor | None, state=None, attention_mask=None):
        """(B, T) ids, (B, Z) latent, `PretrainedDecoderState` or None -> ((B, T, H) hidden, new state).

        The cache is extended in place (as `transformers` caches are); positions go on from
        `state.length`, not counting the memory slot. `attention_mask` (B, T) covers the new tokens.
        """
        if z is None and (self.latent_to_inputs is not None or self.latent_to_memory is not None):
            raise ValueError(
                "this decoder is conditioned on z: pass z of shape (batch, latent_dim), got None"
            )
        batch_size, length = input_ids.shape
        if state is None:
            state = self.initial_state(z, batch_size)
        if self.max_positions is not None and state.length + length > self.max_positions:
            raise ValueError(
                f"a sequence of {state.length + length} tokens exceeds the decoder's {self.max_positions} "
                f"positions; decode with a smaller max_length"
            )
        embeds = self.input_dropout(self.backbone.get_input_embeddings()(input_ids))  # (B, T, H)
        if self.latent_to_inputs is not None:
            embeds = embeds + self.latent_to_inputs(z).unsqueeze(1)
        past_length = state.cache.get_seq_length()
        if attention_mask is not None:
            # The memory slot and the cached tokens are always visible.
            attention_mask = torch.cat(
                [attention_mask.new_ones(batch_size, past_length), attention_mask], dim=1
            )
        positions = torch.arange(state.length, state.length + length, device=input_ids.device)
        output = self.backbone.base_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions.unsqueeze(0).expand(batch_size, -1),
            past_key_values=state.cache,
            use_cache=True,
        )
        hidden = self.output_dropout(output.last_hidden_state)
        return hidden, PretrainedDecoderState(output.past_key_values, state.length + length)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (..., V) logits, by the backbone's LM head."""
        return self.backbone.get_output_embeddings()(hidden)

    @staticmethod
    def reorder_state(
        state: PretrainedDecoderState | None, index: torch.Tensor
    ) -> PretrainedDecoderState | None:
        """Select (and repeat) batch rows of the cache, for beam search: `index` is (B',)."""
        if state is None:
            return None
        state.cache.reorder_cache(index)
        return PretrainedDecoderState(state.cache, state.length)
