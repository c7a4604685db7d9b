"""Transformer encoder and decoder of a text VAE: pre-norm layers on `scaled_dot_product_attention`.

Both follow the module interface documented in `textvae.modeling`. The decoder is conditioned on `z` the
two ways Optimus (Li et al. 2020) conditions GPT-2: `z` projected and added to every input embedding
(`z_to_inputs`), and `z` projected to one extra key/value pair per layer that every position attends to
(`z_to_memory`). Its `state` is a key/value cache, so cached decoding costs linear time per token.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .configuration import TextVAEConfig
from .recurrent import RecurrentDecoder, adaptive_log_prob, build_adaptive_softmax


def sinusoidal_positions(positions: torch.Tensor, size: int) -> torch.Tensor:
    """(T,) integer positions -> (T, size) sinusoidal encodings (Vaswani et al. 2017)."""
    half = size // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float) / max(half, 1)
    )
    angles = positions.float()[:, None] * frequencies[None, :]  # (T, size // 2)
    encodings = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(encodings, (0, size - 2 * half))  # an odd size gets one zero column


class PositionEmbedding(nn.Module):
    """Learned or sinusoidal position embeddings of width `size`, per `config.position_embedding_type`."""

    def __init__(self, config: TextVAEConfig, size: int):
        super().__init__()
        self.size = size
        self.max_positions = config.max_position_embeddings
        self.learned = config.position_embedding_type == "learned"
        self.table = nn.Embedding(self.max_positions, size) if self.learned else None

    def forward(self, start: int, length: int, device: torch.device) -> torch.Tensor:
        """Embeddings (length, size) of positions `start .. start + length - 1`."""
        if self.learned and start + length > self.max_positions:
            raise ValueError(
                f"a sequence of {start + length} tokens exceeds max_position_embeddings ({self.max_positions}); "
                f"decode with a smaller max_length"
            )
        positions = torch.arange(start, start + length, device=device)
        if self.learned:
            return self.table(positions)
        return sinusoidal_positions(positions, self.size)


class TransformerLayer(nn.Module):
    """Pre-norm layer, `x + attention(LN(x))` then `x + MLP(LN(x))` (GPT-2; Xiong et al. 2020).

    Pre-norm keeps gradients well scaled at initialisation, so the layer trains without learning-rate
    warm-up, which matters for the short schedules of sentence VAEs.
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.attention_output = nn.Linear(hidden_size, hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, intermediate_size), nn.GELU(), nn.Linear(intermediate_size, hidden_size)
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(
        self,
        hidden: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """(B, T, H) -> ((B, T, H), (key, value) each (B, heads, P + T, d)).

        attn_mask: bool, broadcastable to (B, heads, T, P + T), True where a query may attend.
        past: (key, value) each (B, heads, P, d) attended before this call's own keys (cache, memory).
        """
        batch_size, length, hidden_size = hidden.shape
        qkv = self.qkv(self.attention_norm(hidden))  # (B, T, 3H)
        qkv = qkv.view(batch_size, length, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # each (B, heads, T, d)
        if past is not None:
            key = torch.cat([past[0], key], dim=2)  # (B, heads, P + T, d)
            value = torch.cat([past[1], value], dim=2)
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, heads, T, d)
        attended = attended.transpose(1, 2).reshape(batch_size, length, hidden_size)
        hidden = hidden + self.residual_dropout(self.attention_output(attended))
        hidden = hidden + self.residual_dropout(self.mlp(self.mlp_norm(hidden)))
        return hidden, (key, value)


def init_transformer_weights(module: nn.Module, num_layers: int) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2L)."""
    for name, child in module.named_modules():
        if isinstance(child, (nn.Linear, nn.Embedding)):
            std = 0.02
            if name.endswith(("attention_output", "mlp.2")):
                std /= math.sqrt(2 * num_layers)  # Radford et al. 2019: keeps the residual stream's scale
            nn.init.normal_(child.weight, mean=0.0, std=std)
            if isinstance(child, nn.Linear) and child.bias is not None:
                nn.init.zeros_(child.bias)
            if isinstance(child, nn.Embedding) and child.padding_idx is not None:
                with torch.no_grad():
                    child.weight[child.padding_idx].zero_()


def _make_layers(config: TextVAEConfig, num_layers: int) -> nn.ModuleList:
    return nn.ModuleList(
        TransformerLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            config.transformer_dropout,
        )
        for _ in range(num_layers)
    )


def _embedding_to_hidden(config: TextVAEConfig) -> nn.Module:
    if config.embedding_size == config.hidden_size:
        return nn.Identity()
    return nn.Linear(config.embedding_size, config.hidden_size, bias=False)


class TransformerEncoder(nn.Module):
    """Bidirectional transformer over the sentence, pooled to one feature vector.

    `encoder_pooling="mean"` averages the last layer over real tokens; `"summary"` prepends a learned
    token (like BERT's [CLS]) and returns its last-layer state. `output_size` is `hidden_size`.
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        hidden_size = config.hidden_size
        self.embedding = nn.Embedding(
            config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
        self.embedding_to_hidden = _embedding_to_hidden(config)
        self.positions = PositionEmbedding(config, hidden_size)
        self.summary = (
            nn.Parameter(torch.zeros(1, 1, hidden_size)) if config.encoder_pooling == "summary" else None
        )
        self.dropout = nn.Dropout(config.transformer_dropout)
        self.layers = _make_layers(config, config.encoder_num_layers)
        self.final_norm = nn.LayerNorm(hidden_size)
        self.output_size = hidden_size
        init_transformer_weights(self, config.encoder_num_layers)
        if self.summary is not None:
            nn.init.normal_(self.summary, std=0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and mask -> (B, hidden_size) sentence features."""
        batch_size, length = input_ids.shape
        hidden = self.embedding_to_hidden(self.embedding(input_ids))  # (B, T, H)
        hidden = hidden + self.positions(0, length, input_ids.device)
        real = attention_mask.bool()  # (B, T)
        if self.summary is not None:
            hidden = torch.cat([self.summary.expand(batch_size, -1, -1), hidden], dim=1)  # (B, 1 + T, H)
            real = torch.cat([real.new_ones(batch_size, 1), real], dim=1)
        hidden = self.dropout(hidden)
        key_mask = real[:, None, None, :]  # (B, 1, 1, K): no query attends to padding
        for layer in self.layers:
            hidden, _ = layer(hidden, attn_mask=key_mask)
        hidden = self.final_norm(hidden)
        if self.summary is not None:
            return hidden[:, 0]
        weights = real.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class KeyValueCache(NamedTuple):
    """State of a `TransformerDecoder`: what later tokens attend to.

    layers: per layer (key, value), each (B, heads, M + t, d), the M memory slots (from z) first.
    length: t, the tokens read so far (memory excluded), which is the position of the next token.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    length: int


class TransformerDecoder(nn.Module):
    """Causal pre-norm transformer language model conditioned on `z` (Optimus, Li et al. 2020).

    `z_to_inputs` adds `W z` to every input embedding; `z_to_memory` projects `z` to a key and a value
    per layer, prepended to the layer's keys and values so that every position attends to it. With
    `latent_dim=0` both are off and it is a plain language model (`z` is None).
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        hidden_size, num_layers = config.hidden_size, config.decoder_num_layers
        self.num_layers = num_layers
        self.num_heads = config.num_attention_heads
        self.head_size = hidden_size // config.num_attention_heads
        self.embedding = nn.Embedding(
            config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
        self.input_dropout = nn.Dropout(config.decoder_input_dropout)
        self.embedding_to_hidden = _embedding_to_hidden(config)
        self.positions = PositionEmbedding(config, hidden_size)
        # Longest sequence it reads (None: sinusoidal positions have no limit); decoding caps max_length by it.
        self.max_positions = config.max_position_embeddings if self.positions.learned else None
        use_inputs = config.has_latent and config.z_to_inputs
        use_memory = config.has_latent and config.z_to_memory
        self.latent_to_inputs = nn.Linear(config.latent_dim, hidden_size) if use_inputs else None
        self.latent_to_memory = (
            nn.Linear(config.latent_dim, num_layers * 2 * hidden_size) if use_memory else None
        )
        self.dropout = nn.Dropout(config.transformer_dropout)
        self.layers = _make_layers(config, num_layers)
        self.final_norm = nn.LayerNorm(hidden_size)
        self.output_dropout = nn.Dropout(config.decoder_output_dropout)
        self.tie_embeddings = config.tie_embeddings
        self.adaptive_output = None
        if config.output_layer == "adaptive":
            # Grave et al. 2017, as the recurrent decoder's; GPT-2 initialisation below, as the full layer.
            self.adaptive_output = build_adaptive_softmax(config)
        elif self.tie_embeddings:
            # Press & Wolf (2017): the output weights are the input embedding.
            self.hidden_to_embedding = (
                nn.Linear(hidden_size, config.embedding_size, bias=False)
                if hidden_size != config.embedding_size
                else nn.Identity()
            )
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(hidden_size, config.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation (also the decoder reset after autoencoder pretraining, Li et al. 2019)."""
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        if self.tie_embeddings:
            nn.init.zeros_(self.output_bias)
        init_transformer_weights(self, len(self.layers))

    def memory(self, z: torch.Tensor | None) -> tuple[tuple[torch.Tensor, torch.Tensor], ...] | None:
        """(B, Z) latent -> per layer (key, value), each (B, heads, 1, d); None without memory."""
        if self.latent_to_memory is None:
            return None
        memory = self.latent_to_memory(z).view(
            z.size(0), self.num_layers, 2, self.num_heads, 1, self.head_size
        )
        return tuple((memory[:, i, 0], memory[:, i, 1]) for i in range(self.num_layers))

    def _embed(self, input_ids: torch.Tensor, z: torch.Tensor | None, start: int) -> torch.Tensor:
        """(B, T) ids of positions `start ..` -> (B, T, H) layer inputs."""
        hidden = self.embedding_to_hidden(self.input_dropout(self.embedding(input_ids)))  # (B, T, H)
        hidden = hidden + self.positions(start, input_ids.size(1), input_ids.device)
        if self.latent_to_inputs is not None:
            hidden = hidden + self.latent_to_inputs(z).unsqueeze(1)  # the same z at every position
        return self.dropout(hidden)

    def forward(self, input_ids: torch.Tensor, z: torch.Tensor | None, state=None, attention_mask=None):
        """(B, T) ids, (B, Z) latent, `KeyValueCache` or None -> ((B, T, H) hidden states, new cache).

        With a state, `input_ids` continue the sentence the state has read (positions go on from
        `state.length`). `attention_mask` is unused: padding only ever follows real tokens, which causal
        attention keeps from seeing it, and outputs at padding are masked out of the loss.
        """
        if z is None and (self.latent_to_inputs is not None or self.latent_to_memory is not None):
            raise ValueError(
                "this decoder is conditioned on z: pass z of shape (batch, latent_dim), got None"
            )
        length = input_ids.size(1)
        start = 0 if state is None else state.length
        past = self.memory(z) if state is None else state.layers
        hidden = self._embed(input_ids, z, start)
        past_length = 0 if past is None else past[0][0].size(2)
        attn_mask = None
        if length > 1 and past_length > 0:
            # Query i sits at key index past_length + i: it sees the memory, the cache and itself.
            keys = torch.arange(past_length + length, device=input_ids.device)
            queries = torch.arange(length, device=input_ids.device) + past_length
            attn_mask = keys[None, :] <= queries[:, None]  # (T, P + T)
        is_causal = length > 1 and past_length == 0
        new_layers = []
        for index, layer in enumerate(self.layers):
            hidden, key_value = layer(
                hidden, attn_mask=attn_mask, is_causal=is_causal, past=None if past is None else past[index]
            )
            new_layers.append(key_value)
        hidden = self.output_dropout(self.final_norm(hidden))
        return hidden, KeyValueCache(tuple(new_layers), start + length)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (..., V) vocabulary logits; with the adaptive softmax its float32
        log-probabilities, normalised logits (see `RecurrentDecoder.project`)."""
        if self.adaptive_output is not None:
            return adaptive_log_prob(self.adaptive_output, hidden)
        if self.tie_embeddings:
            return F.linear(self.hidden_to_embedding(hidden), self.embedding.weight, self.output_bias)
        return self.output(hidden)

    # The output layer is the recurrent decoder's, attribute for attribute (`tie_embeddings`, `embedding`,
    # `hidden_to_embedding`, `output_bias`, `output`, `adaptive_output`), so its fused projection +
    # cross-entropy (or the adaptive softmax's loss) applies:
    # `token_loss(hidden (N, H), labels (N,)) -> (N,)`, which training uses instead of `project`.
    token_loss = RecurrentDecoder.token_loss

    @staticmethod
    def reorder_state(state: KeyValueCache | None, index: torch.Tensor) -> KeyValueCache | None:
        """Select (and repeat) batch rows of a cache, for beam search: `index` is (B',)."""
        if state is None:
            return None
        layers = tuple(
            (key.index_select(0, index), value.index_select(0, index)) for key, value in state.layers
        )
        return KeyValueCache(layers, state.length)
