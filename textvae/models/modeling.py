"""The text VAE model: encoder, Gaussian posterior, reparameterization, decoder and losses.

Module interface every architecture follows (recurrent in `recurrent.py`; others plug in the same way):

- encoder: `forward(input_ids (B, T), attention_mask (B, T)) -> (B, output_size)`, attribute `output_size`;
- decoder: `forward(input_ids (B, T), z (B, Z) | None, state=None, attention_mask=None)
  -> (hidden (B, T, H), state)`, where `state=None` starts a sentence and the returned state continues it;
  `project(hidden (..., H)) -> logits (..., V)`; `reorder_state(state, index (B',))` for beam search;
  optionally `token_loss(hidden (N, H), labels (N,)) -> (N,)`, the projection and cross-entropy fused,
  which training uses when it needs no logits. A decoder with an adaptive softmax (`output_layer`
  "adaptive", Grave et al. 2017) returns from `project` its normalised log-probabilities, which are
  logits of the same distribution: decoding, `cross_entropy` and `softmax` read them unchanged.

A sentence is `[BOS, w_1 .. w_n, EOS]` plus padding. The decoder reads `[BOS, w_1 .. w_n]` and predicts
`[w_1 .. w_n, EOS]`: the reconstruction loss covers the words plus EOS, never BOS (docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .architecture import RNN_TYPES
from .configuration import TextVAEConfig


@dataclass
class TextVAEOutput(ModelOutput):
    """What `TextVAEModel.forward` returns.

    loss: scalar training loss, `mean(rec_loss) + kl_weight * KL term` (free bits applied to the KL term).
    rec_loss: (B,) `-log p(x | z)` summed over words plus EOS.
    kl: (B,) `KL(q(z | x) || N(0, I))` in closed form; zeros for a language model and a deterministic
        autoencoder (which has no KL term).
    kl_per_dim: (B, Z) the same per latent dimension.
    mu, logvar, z: (B, Z) posterior parameters and the latent the decoder read; None for a language model;
        a deterministic autoencoder's `logvar` is None and its z is mu.
    logits: (B, T - 1, V) decoder logits, zeros at padded positions; None unless asked for.
    bow_loss: (B,) the bag-of-words loss (`config.bag_of_words_loss` > 0): `-sum log p_bow(w | z)` over
        the words plus EOS; None when off. `loss` includes it with its weight; `rec_loss` never does.
    """

    loss: torch.Tensor | None = None
    rec_loss: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    kl_per_dim: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None
    z: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    bow_loss: torch.Tensor | None = None


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B, Z) posterior parameters -> (B, Z) `KL(N(mu, exp(logvar)) || N(0, 1))` per dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(..., Z) points and Gaussian parameters -> (...) log density of a diagonal Gaussian."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(dim=-1)


def free_bits_kl(mean_kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term with free bits (Kingma et al. 2016): (Z,) batch-mean KL per dimension -> scalar.

    Each dimension's batch-mean KL is floored at `free_bits` nats (0: no floor) before the sum. Below the
    floor a dimension's KL carries no gradient, so the optimiser has no reason to shut that dimension off.
    """
    return mean_kl_per_dim.clamp(min=free_bits).sum() if free_bits > 0 else mean_kl_per_dim.sum()


class FixedScaleBatchNorm(nn.Module):
    """BN-VAE's posterior-mean normalisation (Zhu et al. 2020): `gamma * BN(mu) + beta`, gamma fixed.

    With each dimension of mu normalised over the batch to mean beta and variance gamma^2, the expected
    KL of a dimension is at least gamma^2 / 2, so no dimension can collapse; beta is learned.
    `synchronize`: in training, take the statistics over the global batch of all processes of a
    `torch.distributed` group (each holding a shard of it), as `SyncBatchNorm` does on GPUs only; the
    trainer sets it when it trains on several processes.
    """

    def __init__(self, latent_dim: int, gamma: float):
        super().__init__()
        self.gamma = gamma
        self.norm = nn.BatchNorm1d(latent_dim, affine=False)
        self.beta = nn.Parameter(torch.zeros(latent_dim))
        self.synchronize = False

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        """(B, Z) -> (B, Z); a batch of one uses the running statistics even in training."""
        if self.training and self.synchronize:
            return self.gamma * self._normalise_globally(mu) + self.beta
        if self.training and mu.size(0) == 1:
            normalised = F.batch_norm(mu, self.norm.running_mean, self.norm.running_var, training=False)
        else:
            normalised = self.norm(mu)
        return self.gamma * normalised + self.beta

    def _normalise_globally(self, mu: torch.Tensor) -> torch.Tensor:
        """(B, Z) shard -> (B, Z) normalised by the mean and biased variance of the global batch.

        Two reductions (the mean, then the squared deviations from it) keep the precision of BatchNorm's
        own two-pass variance; both carry gradients, so every shard's rows see the whole batch's.
        """
        from ..distributed import differentiable_all_reduce_sum

        norm, mu = self.norm, mu.float()
        sums = differentiable_all_reduce_sum(torch.cat([mu.sum(dim=0), mu.new_full((1,), mu.size(0))]))
        count = int(sums[-1].item())  # the global batch size, equal on every process
        if count == 1:
            return F.batch_norm(mu, norm.running_mean, norm.running_var, training=False)
        mean = sums[:-1] / count  # (Z,)
        variance = differentiable_all_reduce_sum((mu - mean).pow(2).sum(dim=0)) / count  # (Z,) biased
        with torch.no_grad():  # running statistics as BatchNorm1d keeps them: the unbiased variance
            norm.num_batches_tracked += 1
            norm.running_mean.lerp_(mean.detach(), norm.momentum)
            norm.running_var.lerp_(variance.detach() * count / (count - 1), norm.momentum)
        return (mu - mean) / torch.sqrt(variance + norm.eps)


def build_encoder(config: TextVAEConfig) -> nn.Module:
    """The encoder module named by `config.encoder_type`."""
    if config.encoder_type in RNN_TYPES:
        from .recurrent import RecurrentEncoder

        return RecurrentEncoder(config)
    if config.encoder_type == "transformer":
        from .transformer import TransformerEncoder

        return TransformerEncoder(config)
    from .backbones import PretrainedEncoder

    return PretrainedEncoder(config)


def build_decoder(config: TextVAEConfig) -> nn.Module:
    """The decoder module named by `config.decoder_type`."""
    if config.decoder_type in RNN_TYPES:
        from .recurrent import RecurrentDecoder

        return RecurrentDecoder(config)
    if config.decoder_type == "transformer":
        from .transformer import TransformerDecoder

        return TransformerDecoder(config)
    from .backbones import PretrainedDecoder

    return PretrainedDecoder(config)


class TextVAEModel(PreTrainedModel):
    """A sentence VAE (Bowman et al. 2016): `q(z | x)` from the encoder, `p(x | z)` from the decoder.

    With `config.latent_dim == 0` it is the decoder alone: a language model with the same code paths,
    whose `kl` is zero, so VAE and language-model rows of a table are trained and evaluated alike.
    """

    config_class = TextVAEConfig
    base_model_prefix = "textvae"
    main_input_name = "input_ids"

    def __init__(self, config: TextVAEConfig):
        super().__init__(config)
        if config.has_latent:
            self.encoder = build_encoder(config)
            # A deterministic autoencoder's head gives z itself; a VAE's gives mu and logvar.
            outputs = config.latent_dim if config.deterministic else 2 * config.latent_dim
            self.posterior = nn.Linear(self.encoder.output_size, outputs)
            gamma = config.posterior_mean_batchnorm
            self.mean_norm = FixedScaleBatchNorm(config.latent_dim, gamma) if gamma > 0 else None
        else:
            self.encoder = None
            self.posterior = None
            self.mean_norm = None
        self.bag_of_words = None
        if config.has_latent and config.bag_of_words_loss > 0:
            # Zhao et al. 2017: z alone must predict the sentence's words (an MLP, one softmax for all).
            self.bag_of_words = nn.Sequential(
                nn.Linear(config.latent_dim, config.hidden_size),
                nn.Tanh(),
                nn.Linear(config.hidden_size, config.vocab_size),
            )
        self.decoder = build_decoder(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's default initialisation is what the reference LSTM VAEs train with; pretrained
        # backbones keep their own weights.
        pass

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(B, T) ids -> posterior `mu`, `logvar`, each (B, Z); a deterministic autoencoder's `logvar` is
        None (its code is the point `mu`). Raises for a language model."""
        if not self.config.has_latent:
            raise ValueError("this model has no latent (latent_dim=0): it cannot encode sentences")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        features = self.encoder(input_ids, attention_mask)  # (B, F)
        if self.config.deterministic:
            return self.posterior(features), None
        if self.mean_norm is None:
            mu, logvar = self.posterior(features).chunk(2, dim=-1)
            return mu, logvar
        # The batch norm removes any shift of mu, so the bias of mu has a zero gradient, up to rounding
        # noise that Adam would scale up to steps of the learning rate's size: it gets none at all.
        weight, bias, latent_dim = self.posterior.weight, self.posterior.bias, self.config.latent_dim
        mu = F.linear(features, weight[:latent_dim], bias[:latent_dim].detach())  # (B, Z)
        logvar = F.linear(features, weight[latent_dim:], bias[latent_dim:])  # (B, Z)
        return self.mean_norm(mu), logvar

    def encode_batch(self, batch: dict):
        """`encode` a collated batch (`data.storage.collate`): (B, Z) `mu`, `logvar`; a pretrained encoder
        reads its own ids (`encoder_input_ids`)."""
        if "encoder_input_ids" in batch:
            return self.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
        return self.encode(batch["input_ids"], batch["attention_mask"])

    @staticmethod
    def reparameterize(
        mu: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ):
        """`z = mu + exp(logvar / 2) * eps`, `eps ~ N(0, I)` (Kingma & Welling 2014); shapes (B, Z).

        eps: (B, Z) the standard normal draws to use; default: drawn here (from `generator`).
        """
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)

    def reconstruction_loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        z: torch.Tensor | None,
        word_dropout: float = 0.0,
        return_logits: bool = False,
        word_dropout_draws: torch.Tensor | None = None,
    ):
        """`-log p(x | z)` per sentence: (B, T) ids, (B, Z) z -> ((B,) loss, (B, T - 1, V) logits or None).

        Logits are computed only at real (non-padding) positions: the vocabulary projection is most of
        the arithmetic, so padding would otherwise cost as much as real tokens. Without `return_logits`
        a decoder's `token_loss(hidden (N, H), labels (N,)) -> (N,)`, when it has one, scores them without
        keeping the logits (the recurrent decoder's fuses the projection with the cross-entropy).
        word_dropout_draws: (B, >= T - 1) uniform [0, 1) draws; the input word at position t is dropped
        where draw[:, t] < word_dropout. Default: drawn here.
        """
        decoder_input = input_ids[:, :-1]  # (B, T-1): BOS, w_1 .. w_n (and padding)
        labels = input_ids[:, 1:]  # (B, T-1): w_1 .. w_n, EOS (and padding)
        label_mask = attention_mask[:, 1:].bool()
        if word_dropout > 0.0 and self.training:
            # Bowman et al. (2016): hide some of the decoder's input words behind UNK so that it must
            # lean on z. BOS stays, so the first prediction is never blind to which sentence starts.
            if word_dropout_draws is None:
                word_dropout_draws = torch.rand(decoder_input.shape, device=input_ids.device)
            drop = word_dropout_draws[:, : decoder_input.size(1)] < word_dropout  # (B, T-1)
            drop[:, 0] = False
            decoder_input = decoder_input.masked_fill(
                drop & attention_mask[:, :-1].bool(), self.config.unk_token_id
            )
        hidden, _ = self.decoder(decoder_input, z, attention_mask=attention_mask[:, :-1])  # (B, T-1, H)
        real_hidden = hidden[label_mask]  # (N, H)
        real_labels = labels[label_mask]  # (N,)
        if not return_logits and hasattr(self.decoder, "token_loss"):
            token_loss = self.decoder.token_loss(real_hidden, real_labels)  # (N,)
        else:
            real_logits = self.decoder.project(real_hidden).float()  # (N, V)
            token_loss = F.cross_entropy(real_logits, real_labels, reduction="none")  # (N,)
        rec_loss = hidden.new_zeros(label_mask.shape, dtype=token_loss.dtype)
        rec_loss = rec_loss.masked_scatter(label_mask, token_loss).sum(dim=1)  # (B,)
        logits = None
        if return_logits:
            logits = real_logits.new_zeros(*label_mask.shape, real_logits.size(-1))
            logits[label_mask] = real_logits
        return rec_loss, logits

    def bag_of_words_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, z: torch.Tensor):
        """(B, T) ids, (B, Z) z -> (B,) `-sum_t log p_bow(x_t | z)` over the words plus EOS (Zhao et al.
        2017): every target word scored by one softmax from z, their order ignored."""
        log_probs = F.log_softmax(self.bag_of_words(z).float(), dim=-1)  # (B, V)
        labels, label_mask = input_ids[:, 1:], attention_mask[:, 1:].bool()  # (B, T-1)
        token_log_probs = log_probs.gather(1, labels)  # (B, T-1)
        return -(token_log_probs * label_mask).sum(dim=1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        free_bits: float = 0.0,
        word_dropout: float = 0.0,
        sample_latent: bool = True,
        return_logits: bool = True,
        encoder_input_ids: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
        word_dropout_draws: torch.Tensor | None = None,
    ) -> TextVAEOutput:
        """Encode, sample `z` (or take the posterior mean, or a given `z`), decode, and score.

        input_ids: (B, T) `[BOS, words, EOS]` plus padding; attention_mask: (B, T), 1 on real tokens.
        z: (B, Z) to decode from instead of the posterior (KL is still that of the posterior).
        free_bits: per-dimension floor on the batch-mean KL (Kingma et al. 2016), in nats.
        encoder_input_ids / encoder_attention_mask: (B, S) the sentence in the encoder's own vocabulary,
        for a pretrained encoder whose tokenizer differs from the decoder's; default: `input_ids`.
        eps, word_dropout_draws: the random draws of the step, (B, Z) standard normal and (B, >= T - 1)
        uniform; default: drawn from torch's global generator. Training passes its own, drawn for the
        global batch, so that every process of a distributed run uses the draws one process would.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if input_ids.size(1) < 2:
            raise ValueError("input_ids must hold at least BOS and EOS (length >= 2)")
        mu = logvar = None
        batch_size = input_ids.size(0)
        if self.config.has_latent:
            if encoder_input_ids is None:
                if self.config.encoder_type == "hf":
                    raise ValueError(
                        "a pretrained (hf) encoder reads its own token ids: pass encoder_input_ids"
                    )
                encoder_input_ids, encoder_attention_mask = input_ids, attention_mask
            mu, logvar = self.encode(encoder_input_ids, encoder_attention_mask)
            if self.config.deterministic:  # no posterior: z is the code, and there is no KL term
                z = mu if z is None else z
                kl_per_dim = mu.new_zeros(mu.shape, dtype=torch.float)  # (B, Z)
            else:
                if z is None:
                    z = self.reparameterize(mu, logvar, eps=eps) if sample_latent else mu
                kl_per_dim = gaussian_kl(mu, logvar).float()  # (B, Z)
        else:
            z = None
            kl_per_dim = input_ids.new_zeros((batch_size, 0), dtype=torch.float)
        kl = kl_per_dim.sum(dim=1)  # (B,)
        rec_loss, logits = self.reconstruction_loss(
            input_ids, attention_mask, z, word_dropout, return_logits, word_dropout_draws
        )
        if free_bits > 0.0 and self.config.has_posterior:
            kl_term = free_bits_kl(kl_per_dim.mean(dim=0), free_bits)
        else:
            kl_term = kl.mean()
        loss = rec_loss.mean() + kl_weight * kl_term
        bow_loss = None
        if self.bag_of_words is not None:
            bow_loss = self.bag_of_words_loss(input_ids, attention_mask, z)  # (B,)
            loss = loss + self.config.bag_of_words_loss * bow_loss.mean()
        return TextVAEOutput(
            loss=loss,
            rec_loss=rec_loss,
            kl=kl,
            kl_per_dim=kl_per_dim,
            mu=mu,
            logvar=logvar,
            z=z,
            logits=logits,
            bow_loss=bow_loss,
        )

    @torch.no_grad()
    def init_decoder_from(self, source: TextVAEModel) -> None:
        """Copy the decoder of a trained model (usually a language model, `latent_dim` 0) into this one.

        Every decoder weight of `source` is copied; the weights that read `z` (the `latent_to_*` layers
        and the `z` columns of a recurrent decoder's first input weights) start at zero. A recurrent
        decoder, or a transformer decoder without `z_to_memory`, then predicts exactly what `source`
        does whatever `z` is, and VAE training starts from the language model instead of from scratch.
        Raises `ValueError` when the two decoders differ in anything but their `z` inputs.
        """
        if "hf" in (self.config.decoder_type, source.config.decoder_type):
            raise ValueError("init_decoder_from is for textvae's own decoders, not a pretrained (hf) one")
        if source.config.decoder_type != self.config.decoder_type:
            raise ValueError(
                f"cannot initialise a {self.config.decoder_type} decoder from a "
                f"{source.config.decoder_type} decoder"
            )
        if source.config.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"vocabularies differ: {source.config.vocab_size} tokens in the source, {self.config.vocab_size} here"
            )
        for name in ("output_layer", "adaptive_cutoffs"):  # the same weight shapes could mean other words
            if getattr(source.config, name, None) != getattr(self.config, name, None):
                raise ValueError(
                    f"decoders do not match: {name} is {getattr(self.config, name, None)!r} here but "
                    f"{getattr(source.config, name, None)!r} in the source"
                )
        source_weights = source.decoder.state_dict()
        latent_dim = self.config.latent_dim
        for name, target in self.decoder.state_dict().items():
            weight = source_weights.get(name)
            if weight is not None and weight.shape == target.shape:
                target.copy_(weight)
            elif weight is None and name.startswith("latent_to_"):
                target.zero_()  # reads z: nothing to copy from a language model
            elif (
                weight is not None
                and weight.dim() == target.dim() == 2
                and weight.size(0) == target.size(0)
                and target.size(1) - weight.size(1) == latent_dim > 0
            ):
                target[:, : weight.size(1)] = weight  # input columns of the embedding, then of z
                target[:, weight.size(1) :] = 0.0
            else:
                found = "missing" if weight is None else tuple(weight.shape)
                raise ValueError(
                    f"decoders do not match: {name} is {tuple(target.shape)} here but {found} in the source"
                )


AutoConfig.register(TextVAEConfig.model_type, TextVAEConfig)
AutoModel.register(TextVAEConfig, TextVAEModel)
