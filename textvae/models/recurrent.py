"""Recurrent (LSTM / GRU) encoder and decoder of a text VAE.

Both follow the module interface documented in `textvae.modeling`: an encoder maps `(input_ids,
attention_mask)` to one feature vector per sentence, a decoder maps `(input_ids, z, state)` to hidden
states and a new state, and `project` turns hidden states into vocabulary logits. The decoder also
offers `token_loss`, the projection and cross-entropy fused, which training uses.

The output layer is the decoder's (the transformer decoder shares it): a full linear projection to the
vocabulary, tied to the input embedding or not, or an adaptive softmax (`output_layer="adaptive"`, Grave et
al. 2017), whose helpers `build_adaptive_softmax`, `adaptive_log_prob` and `adaptive_token_loss` live here.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from .configuration import TextVAEConfig

_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU}
# Rows of logits normalised at a time: small enough (~2.5 MB at V = 10k) for the temporaries of
# `logsumexp` to stay in cache and come from the allocator's free lists rather than fresh pages.
_SOFTMAX_CHUNK_ROWS = 64


# Rows scored per matrix product when no gradient is needed (evaluation): 1024 x V floats is 40 MB at
# V = 10k, reused for every chunk, where the importance-weighted NLL's K samples would otherwise need GBs.
_SCORING_CHUNK_ROWS = 1024


def _linear_cross_entropy_no_grad(features, weight, bias, labels) -> torch.Tensor:
    """`cross_entropy(features @ weight.T + bias, labels, reduction="none")` without building (N, V) tensors.

    Rows go through one reused buffer: its target logits are read, then it becomes `exp(logits - max)`
    in place, so no log-softmax or temporary of the full size is ever allocated.
    """
    loss = features.new_empty(features.size(0), dtype=torch.float32)
    buffer = features.new_empty(
        min(features.size(0), _SCORING_CHUNK_ROWS), weight.size(0), dtype=torch.float32
    )
    for start in range(0, features.size(0), _SCORING_CHUNK_ROWS):
        rows = features[start : start + _SCORING_CHUNK_ROWS]
        logits = torch.addmm(bias.float(), rows.float(), weight.float().t(), out=buffer[: rows.size(0)])
        target = logits.gather(1, labels[start : start + rows.size(0), None]).squeeze(1)  # (n,)
        peak = logits.amax(dim=1, keepdim=True)  # (n, 1)
        normaliser = logits.sub_(peak).exp_().sum(dim=1).log_().add_(peak.squeeze(1))  # (n,)
        loss[start : start + rows.size(0)] = normaliser - target
    return loss


class _LinearCrossEntropy(torch.autograd.Function):
    """`cross_entropy(features @ weight.T + bias, labels, reduction="none")` with a hand-written backward.

    Composed from library ops it allocates four (N, V) tensors per step: the logits, their log-softmax,
    the one-hot gradient of the NLL and the log-softmax gradient. On a CPU each costs a pass over memory
    plus the page faults of a fresh buffer, together about as much as the projection's matrix products.
    Here one (N, V) buffer holds the logits and is turned in place into `softmax - onehot(labels)`, the
    gradient of each row's loss with respect to its logits; the backward is three matrix products. The
    saved buffer is never modified afterwards, so a second backward (`retain_graph`) gets the same result.
    """

    @staticmethod
    def forward(ctx, features, weight, bias, labels):
        logits = torch.addmm(bias, features, weight.t())  # (N, V)
        index = labels.unsqueeze(1)  # (N, 1)
        loss = -logits.gather(1, index).squeeze(1)  # (N,)
        for rows, chunk_loss in zip(
            logits.split(_SOFTMAX_CHUNK_ROWS), loss.split(_SOFTMAX_CHUNK_ROWS), strict=True
        ):
            log_normaliser = torch.logsumexp(rows, dim=1, keepdim=True)  # (n, 1)
            chunk_loss.add_(log_normaliser.squeeze(1))
            rows.sub_(log_normaliser).exp_()  # softmax, while the rows are still in cache
        grad_logits = logits.scatter_(1, index, logits.gather(1, index) - 1)  # (N, V) softmax - onehot
        ctx.save_for_backward(features, weight, grad_logits)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        features, weight, grad_logits = ctx.saved_tensors
        grad_features = torch.mm(grad_logits, weight) * grad_loss.unsqueeze(1)  # (N, F)
        grad_weight = torch.mm(grad_logits.t(), features * grad_loss.unsqueeze(1))  # (V, F)
        grad_bias = torch.mv(grad_logits.t(), grad_loss)  # (V,)
        return grad_features, grad_weight, grad_bias, None


def build_adaptive_softmax(config: TextVAEConfig) -> nn.AdaptiveLogSoftmaxWithLoss:
    """The adaptive softmax of a decoder (Grave et al. 2017): hidden_size -> a distribution over the vocabulary.

    `torch.nn.AdaptiveLogSoftmaxWithLoss` with `config.adaptive_cutoffs`, `div_value` 4 (PyTorch's and the
    paper's) and a head bias (the full layer has one: unigram frequencies are most of what a bias learns).
    The head scores the ids below the first cut-off and one entry per cluster; cluster i projects the hidden
    state to `hidden_size // 4 ** (i + 1)` dimensions, then to its ids. Where that is 0 (a tiny hidden
    size, or many clusters) it is 1 instead: a cluster of zero dimensions could learn nothing but a uniform
    distribution (and PyTorch warns about initialising empty weights).
    """
    hidden_size, vocab_size = config.hidden_size, config.vocab_size
    with warnings.catch_warnings():  # the zero-width projections replaced below
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        softmax = nn.AdaptiveLogSoftmaxWithLoss(
            hidden_size, vocab_size, list(config.adaptive_cutoffs), div_value=4.0, head_bias=True
        )
    for index, cluster in enumerate(softmax.tail):
        if cluster[0].out_features == 0:
            size = cluster[1].out_features
            softmax.tail[index] = nn.Sequential(
                nn.Linear(hidden_size, 1, bias=False), nn.Linear(1, size, bias=False)
            )
    return softmax


def adaptive_log_prob(softmax: nn.AdaptiveLogSoftmaxWithLoss, hidden: torch.Tensor) -> torch.Tensor:
    """(..., H) hidden states -> (..., V) float32 log-probabilities of every token under the adaptive softmax.

    `softmax.log_prob` for any leading shape, computed in float32 even under autocast (the matrix products
    may run in bf16; the log-softmaxes never do): `log p(w) = log p_head(w)` for a head word,
    `log p_head(cluster) + log p_cluster(w)` for the others. The rows are normalised, so they are also valid
    logits (`softmax` / `log_softmax` / `cross_entropy` of them give them back).
    """
    shape = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.size(-1))  # (N, H)
    head = F.log_softmax(softmax.head(flat).float(), dim=-1)  # (N, shortlist + clusters)
    shortlist = softmax.shortlist_size
    parts = [head[:, :shortlist]]
    for index, projection in enumerate(softmax.tail):
        cluster = F.log_softmax(projection(flat).float(), dim=-1)  # (N, cluster size)
        parts.append(cluster + head[:, shortlist + index, None])
    return torch.cat(parts, dim=-1).view(*shape, softmax.n_classes)


def adaptive_token_loss(
    softmax: nn.AdaptiveLogSoftmaxWithLoss, hidden: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """(N, H) hidden states, (N,) next-token ids -> (N,) float32 `-log p(label | hidden)`, adaptive softmax.

    What `softmax(hidden, labels).output` negated gives, without building the (N, V) log-probabilities:
    the head for every row, and each cluster's projection only for the rows whose label falls in it (the
    saving of Grave et al. 2017). Unlike PyTorch's forward it works under autocast (whose bf16 rows it
    cannot write into its float32 output) and keeps float32 log-softmaxes. Every cluster runs, on no rows
    when no label falls in it, so every parameter is in every step's graph with its true gradient, zero:
    DistributedDataParallel needs each parameter's gradient each step, and the processes' shards differ in
    the clusters they meet.
    """
    boundaries = softmax.cutoffs  # [c_0, ..., c_{n-1}, V]
    shortlist = softmax.shortlist_size
    cluster = sum((labels >= cutoff).long() for cutoff in boundaries[:-1])  # (N,) 0: head, i + 1: cluster i
    head_index = torch.where(cluster == 0, labels, shortlist + cluster - 1)  # (N,)
    head = F.log_softmax(softmax.head(hidden).float(), dim=-1)  # (N, shortlist + clusters)
    loss = -head.gather(1, head_index.unsqueeze(1)).squeeze(1)  # (N,)
    for index, projection in enumerate(softmax.tail):
        rows = (cluster == index + 1).nonzero().squeeze(1)  # (n,)
        log_probs = F.log_softmax(projection(hidden.index_select(0, rows)).float(), dim=-1)  # (n, size)
        within = (labels.index_select(0, rows) - boundaries[index]).unsqueeze(1)  # (n, 1)
        loss = loss.index_add(0, rows, -log_probs.gather(1, within).squeeze(1))
    return loss


class RecurrentEncoder(nn.Module):
    """Embeds a sentence and summarises it in the last layer's final hidden state (both directions)."""

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.is_lstm = config.encoder_type == "lstm"
        self.num_layers = config.encoder_num_layers
        self.num_directions = 2 if config.bidirectional_encoder else 1
        self.embedding = nn.Embedding(
            config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
        hidden_size = config.encoder_hidden_size or config.hidden_size
        self.rnn = _RNN_CLASSES[config.encoder_type](
            config.embedding_size,
            hidden_size,
            num_layers=config.encoder_num_layers,
            batch_first=True,
            bidirectional=config.bidirectional_encoder,
        )
        self.output_size = hidden_size * self.num_directions

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
        self.embedding = nn.Embedding(
            config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
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
        # Skip connection (Dieng et al. 2019): z reaches the output directly, not only through the recurrence.
        self.latent_to_output = (
            nn.Linear(latent_dim, config.hidden_size) if config.has_latent and config.z_to_output else None
        )
        self.output_dropout = nn.Dropout(config.decoder_output_dropout)
        self.tie_embeddings = config.tie_embeddings
        self.adaptive_output = None
        if config.output_layer == "adaptive":
            # Grave et al. 2017 (see `build_adaptive_softmax`); the config refuses it with tie_embeddings.
            self.adaptive_output = build_adaptive_softmax(config)
        elif self.tie_embeddings:
            # Output weights are the input embedding; a projection bridges hidden and embedding sizes.
            self.hidden_to_embedding = (
                nn.Linear(config.hidden_size, config.embedding_size, bias=False)
                if config.hidden_size != config.embedding_size
                else nn.Identity()
            )
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(config.hidden_size, config.vocab_size)
        self._init_tied_embedding()  # the submodules were initialised by their own constructors

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation, except a tied embedding (see `_init_tied_embedding`).

        Called by autoencoder pretraining's decoder reset (Li et al. 2019).
        """
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self._init_tied_embedding()

    def _init_tied_embedding(self) -> None:
        """A tied embedding is also the output layer: U(-0.1, 0.1) rows, zero padding row and bias.

        N(0, 1) rows make the tied output's logits as large as the hidden state's norm times the row's
        (a first loss of ~380 nats a sentence on PTB); tied language models draw them from U(-0.1, 0.1)
        instead (Zaremba et al. 2014; Press & Wolf 2017).
        """
        if self.tie_embeddings:
            with torch.no_grad():
                self.embedding.weight.uniform_(-0.1, 0.1)
                self.embedding.weight[self.embedding.padding_idx].zero_()
                self.output_bias.zero_()

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
        if self.latent_to_output is not None and z is not None:
            output = output + self.latent_to_output(z).unsqueeze(1)  # (B, T, H)
        return self.output_dropout(output), state

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (..., V) vocabulary logits.

        With the adaptive softmax, its (..., V) float32 log-probabilities (`adaptive_log_prob`): already
        normalised, so they are logits of the same distribution, and decoding, cross-entropy and softmax
        read them as they read the full layer's logits.
        """
        if self.adaptive_output is not None:
            return adaptive_log_prob(self.adaptive_output, hidden)
        if self.tie_embeddings:
            return nn.functional.linear(
                self.hidden_to_embedding(hidden), self.embedding.weight, self.output_bias
            )
        return self.output(hidden)

    def token_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, H) hidden states, (N,) next-token ids -> (N,) `-log p(label | hidden)`.

        Equal to `cross_entropy(project(hidden).float(), labels)` up to float rounding. While training in
        float32 the projection and the loss are fused (`_LinearCrossEntropy`): one (N, V) buffer instead
        of up to three alive at once, and less time per step on a CPU (scripts/README.md, "Measurements
        behind the code"). With the adaptive softmax, `adaptive_token_loss` (equal to `-project(hidden)` at
        the labels), by chunks of rows when no gradient is needed, so that scoring many rows (the
        importance-weighted NLL's K samples) keeps memory flat.
        """
        if self.adaptive_output is not None:
            if torch.is_grad_enabled():
                return adaptive_token_loss(self.adaptive_output, hidden, labels)
            chunks = zip(hidden.split(_SCORING_CHUNK_ROWS), labels.split(_SCORING_CHUNK_ROWS), strict=True)
            return torch.cat([adaptive_token_loss(self.adaptive_output, *chunk) for chunk in chunks])
        if self.tie_embeddings:
            features, weight, bias = self.hidden_to_embedding(hidden), self.embedding.weight, self.output_bias
        else:
            features, weight, bias = hidden, self.output.weight, self.output.bias
        fused = (
            torch.is_grad_enabled()
            and not torch.is_autocast_enabled(hidden.device.type)
            and features.dtype == weight.dtype == bias.dtype == torch.float32
        )
        if not torch.is_grad_enabled() and not torch.is_autocast_enabled(hidden.device.type):
            return _linear_cross_entropy_no_grad(features, weight, bias, labels)
        if not fused:
            return F.cross_entropy(F.linear(features, weight, bias).float(), labels, reduction="none")
        return _LinearCrossEntropy.apply(features, weight, bias, labels)

    @staticmethod
    def reorder_state(state, index: torch.Tensor):
        """Select (and repeat) batch rows of a state, for beam search: `index` is (B',)."""
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index) for s in state)
        return state.index_select(1, index)
