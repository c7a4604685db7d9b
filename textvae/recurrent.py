"""Recurrent (LSTM / GRU) encoder and decoder of a text VAE.

Both follow the module interface documented in `textvae.modeling`: an encoder maps `(input_ids,
attention_mask)` to one feature vector per sentence, a decoder maps `(input_ids, z, state)` to hidden
states and a new state, and `project` turns hidden states into vocabulary logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .configuration import TextVAEConfig

_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentEncoder(nn.Module):
    """Embeds a sentence and summarises it in the last layer's final hidden state (both directions)."""

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.is_lstm = config.encoder_type == "lstm"
        self.num_layers = config.encoder_num_layers
        self.num_directions = 2 if config.bidirectional_encoder else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.rnn = _RNN_CLASSES[config.encoder_type](
            config.embedding_size,
            config.hidden_size,
            num_layers=config.encoder_num_layers,
            batch_first=True,
            bidirectional=config.bidirectional_encoder,
        )
        self.output_size = config.hidden_size * self.num_directions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and mask -> (B, output_size) sentence features."""
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        embedded = self.embedding(input_ids)  # (B, T, E)
        # Packing makes the final state the one after each sentence's own last token, not after padding,
        # which matters for the backward direction of a bidirectional encoder.
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        hidden = state[0] if self.is_lstm else state  # (L * D, B, H)
        batch_size = input_ids.size(0)
        # Keep only the last layer; explicit view so 2 layers and batch size 1 reshape correctly.
        last = hidden.view(self.num_layers, self.num_directions, batch_size, -1)[-1]  # (D, B, H)
        return last.transpose(0, 1).reshape(batch_size, self.output_size)  # (B, D * H)


class RecurrentDecoder(nn.Module):
    """Autoregressive LSTM / GRU language model conditioned on `z`.

    Following He et al. (2019), `z` sets the initial state (`c0 = W z`, `h0 = tanh(c0)`) and is
    concatenated to every input embedding, so the decoder cannot easily forget it.
    """

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.is_lstm = config.decoder_type == "lstm"
        self.num_layers = config.decoder_num_layers
        self.hidden_size = config.hidden_size
        latent_dim = config.latent_dim
        self.z_to_inputs = config.has_latent and config.z_to_inputs
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.input_dropout = nn.Dropout(config.decoder_input_dropout)
        input_size = config.embedding_size + (latent_dim if self.z_to_inputs else 0)
        self.rnn = _RNN_CLASSES[config.decoder_type](
            input_size, config.hidden_size, num_layers=config.decoder_num_layers, batch_first=True
        )
        self.latent_to_state = (
            nn.Linear(latent_dim, config.decoder_num_layers * config.hidden_size)
            if config.has_latent and config.z_to_initial_state
            else None
        )
        self.output_dropout = nn.Dropout(config.decoder_output_dropout)
        self.tie_embeddings = config.tie_embeddings
        if self.tie_embeddings:
            # Output weights are the input embedding; a projection bridges hidden and embedding sizes.
            self.hidden_to_embedding = (
                nn.Linear(config.hidden_size, config.embedding_size, bias=False)
                if config.hidden_size != config.embedding_size
                else nn.Identity()
            )
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(config.hidden_size, config.vocab_size)

    def initial_state(self, z: torch.Tensor | None):
        """State before the first token: from `z` (B, Z) when so configured, else zeros (None)."""
        if self.latent_to_state is None or z is None:
            return None
        batch_size = z.size(0)
        cell = self.latent_to_state(z).view(batch_size, self.num_layers, self.hidden_size)
        cell = cell.transpose(0, 1).contiguous()  # (L, B, H)
        hidden = torch.tanh(cell)
        return (hidden, cell) if self.is_lstm else hidden

    def forward(self, input_ids: torch.Tensor, z: torch.Tensor | None, state=None, attention_mask=None):
        """(B, T) ids, (B, Z) latent, previous state or None -> ((B, T, H) hidden states, new state).

        Recurrent decoding is causal by construction; `attention_mask` is unused (padding only follows
        real tokens, and outputs there are masked out of the loss).
        """
        embedded = self.input_dropout(self.embedding(input_ids))  # (B, T, E)
        if self.z_to_inputs:
            embedded = torch.cat([embedded, z.unsqueeze(1).expand(-1, input_ids.size(1), -1)], dim=-1)
        if state is None:
            state = self.initial_state(z)
        output, state = self.rnn(embedded, state)  # (B, T, H)
        return self.output_dropout(output), state

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (..., V) vocabulary logits."""
        if self.tie_embeddings:
            return nn.functional.linear(self.hidden_to_embedding(hidden), self.embedding.weight, self.output_bias)
        return self.output(hidden)

    @staticmethod
    def reorder_state(state, index: torch.Tensor):
        """Select (and repeat) batch rows of a state, for beam search: `index` is (B',)."""
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)
