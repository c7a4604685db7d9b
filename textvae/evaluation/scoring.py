"""Per-sentence likelihood scores: the importance-weighted NLL, and rec, KL and NLL of a batch or of a split.

The definitions are those of docs/evaluation.md (He et al. 2019; Burda et al. 2016 for the importance-weighted
bound): nats per sentence, the sentence's words plus its EOS as targets, the KL weight 1. All randomness
comes from named streams derived from one seed (`stream_generators`, `batch_generators`), so a batch draws
the same numbers whichever process scores it and whatever the other metrics' settings. `evaluation.evaluate`
sums these scores over a split; `score_sentences` keeps them per sentence (anomaly scores, `auroc`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..data.bucketing import LengthBucketSampler
from ..data.storage import TokenizedSplit, collate
from ..data.tokenization import decode_ids
from ..distributed import derived_seed
from ..generation import generate
from ..models.modeling import TextVAEModel, gaussian_kl, gaussian_log_density

# Independent random streams, so that changing one metric's setting (say K) leaves the others unchanged.
# K of the importance-weighted NLL (Burda et al. 2016), as He et al. 2019 and Li et al. 2019 evaluate.
IW_SAMPLES = 500
_STREAMS = ("elbo", "iw", "mi", "prior", "forward", "interpolation")


@torch.no_grad()
def importance_weighted_nll(
    model: TextVAEModel,
    batch: dict[str, torch.Tensor],
    iw_samples: int = IW_SAMPLES,
    chunk_size: int = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Importance-weighted `-log p(x)` per sentence (Burda et al. 2016): a (B,) float64 tensor.

    batch: a collated batch (`input_ids` (B, T), `attention_mask` (B, T), optional encoder ids), moved to
    the model's device. For each sentence K = `iw_samples` latents `z_k ~ q(z | x)` are drawn and
    `nll = -(logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K)`, as `nll_iw` of
    He et al. (2019). The K samples of a sentence are decoded as repeated rows, `chunk_size` samples per
    sentence at a time (decoder batches of B * chunk_size rows), folded in with a running logsumexp, so
    memory does not grow with K. All K draws are made up front, so the result does not depend on
    `chunk_size`. For a language model (no latent) the likelihood is exact and no sample is drawn.
    """
    return importance_weighted_scores(model, batch, None, iw_samples, chunk_size, generator)["nll"]


@torch.no_grad()
def importance_weighted_scores(
    model: TextVAEModel,
    batch: dict[str, torch.Tensor],
    prior=None,
    iw_samples: int = IW_SAMPLES,
    chunk_size: int = 50,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """`importance_weighted_nll` under `N(0, I)` and, with the same K draws, under another `prior`.

    prior: an object with `log_prob((N, Z)) -> (N,)` (an `AggregatePrior`: the model whose prior is the
    mixture fitted to the aggregate posterior, the second stage of Dai & Wipf 2019), or None. Returns
    "nll" (B,) float64 as `importance_weighted_nll`, and with a prior also "nll_prior", the same estimate
    with `log p(z_k)` from `prior`, and "kl_prior", the Monte Carlo KL(q(z | x) || prior) over the K draws
    (mean of `log q(z_k | x) - log prior(z_k)`). The decoder runs once for both: only `log p(z_k)` differs,
    so the two NLLs are compared on the same samples.
    """
    if iw_samples < 1:
        raise ValueError(f"iw_samples must be positive, got {iw_samples}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if not model.config.has_latent:
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, None)
        return {"nll": rec.double()}
    if not model.config.has_posterior:
        raise ValueError("a deterministic autoencoder has no likelihood p(x): its NLL does not apply")
    mu, logvar = model.encode_batch(batch)  # (B, Z)
    batch_size, latent_dim = mu.shape
    eps = torch.randn(
        (batch_size, iw_samples, latent_dim), generator=generator, device=mu.device, dtype=mu.dtype
    )
    z_all = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps  # (B, K, Z)
    z64, mu64, logvar64 = z_all.double(), mu[:, None].double(), logvar[:, None].double()
    log_posterior = gaussian_log_density(z64, mu64, logvar64)  # (B, K)
    # log p(z_k) - log q(z_k | x), (B, K), for the prior N(0, I) and for `prior`.
    log_ratios = {
        "nll": gaussian_log_density(z64, torch.zeros_like(z64), torch.zeros_like(z64)) - log_posterior
    }
    if prior is not None:
        log_prior = prior.log_prob(z64.reshape(-1, latent_dim)).to(log_posterior).view(batch_size, iw_samples)
        log_ratios["nll_prior"] = log_prior - log_posterior
    log_totals = {
        name: torch.full((batch_size,), -math.inf, dtype=torch.float64, device=mu.device)
        for name in log_ratios
    }
    for start in range(0, iw_samples, chunk_size):
        z = z_all[:, start : start + chunk_size]  # (B, C, Z)
        count = z.size(1)
        rec, _ = model.reconstruction_loss(
            input_ids.repeat_interleave(count, dim=0),  # (B * C, T): the C rows of a sentence are adjacent
            attention_mask.repeat_interleave(count, dim=0),
            z.reshape(batch_size * count, latent_dim),
        )
        rec = rec.view(batch_size, count).double()
        for name, log_ratio in log_ratios.items():
            log_weights = log_ratio[:, start : start + count] - rec  # (B, C)
            log_totals[name] = torch.logaddexp(log_totals[name], log_weights.logsumexp(dim=1))
    scores = {name: -(total - math.log(iw_samples)) for name, total in log_totals.items()}
    if prior is not None:
        scores["kl_prior"] = -log_ratios["nll_prior"].mean(dim=1)
    return scores


def stream_generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """One generator per random stream (`_STREAMS`: elbo, iw, mi, prior, forward, interpolation), on the
    model's device, all derived from `seed`."""
    root = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (len(_STREAMS),), generator=root).tolist()
    return {
        name: torch.Generator(device=device).manual_seed(s) for name, s in zip(_STREAMS, seeds, strict=True)
    }


def batch_generators(generators: dict[str, torch.Generator], number: int) -> dict[str, torch.Generator]:
    """Generators of the per-batch streams (z of the ELBO, the IW samples) for batch `number` of a split.

    Seeded by (stream seed, batch number): a batch draws the same numbers whichever process scores it.
    """
    return {
        name: torch.Generator(device=generators[name].device).manual_seed(
            derived_seed(generators[name].initial_seed(), number)
        )
        for name in ("elbo", "iw")
    }


def score_batch(model, tokenizer, batch: dict, options: dict, generators: dict) -> dict:
    """Per-sentence rec, KL and IW NLL of one batch, its posteriors and its greedy reconstructions.

    batch: collated (`input_ids` (B, T), `attention_mask` (B, T), optional encoder ids) on the model's
    device; options: iw_samples, iw_chunk_size, compute_bleu, max_length (of the reconstructions), and
    optionally aggregate_prior (an `AggregatePrior`); generators: the "elbo" and "iw" ones of
    `batch_generators`. Returns rec, kl and nll, (B,) float64; with an aggregate prior also nll_aggregate
    and kl_aggregate (`importance_weighted_scores` under it); mu and logvar, (B, Z) float64 (None for a
    language model); hypotheses and references, the decoded reconstructions and inputs (empty unless
    compute_bleu).
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    out = {"mu": None, "logvar": None, "hypotheses": [], "references": []}
    if model.config.has_latent and not model.config.has_posterior:
        # A deterministic autoencoder: rec from its code; KL and NLL do not apply (summed as zeros, which
        # `evaluate` reports as None, N/A).
        mu, _ = model.encode_batch(batch)  # (B, Z)
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, mu)
        out["rec"], out["mu"] = rec.double(), mu.double()
        out["kl"] = out["nll"] = torch.zeros_like(out["rec"])
        if options.get("aggregate_prior") is not None:
            out["nll_aggregate"] = out["kl_aggregate"] = out["kl"]
        if options["compute_bleu"]:
            _reconstructions(model, tokenizer, input_ids, mu, options["max_length"], out)
        return out
    if model.config.has_latent:
        mu, logvar = model.encode_batch(batch)  # (B, Z)
        eps = torch.randn(mu.shape, generator=generators["elbo"], device=mu.device, dtype=mu.dtype)
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, mu + torch.exp(0.5 * logvar) * eps)
        out["kl"] = gaussian_kl(mu.double(), logvar.double()).sum(dim=1)  # (B,)
        prior = options.get("aggregate_prior")
        scores = importance_weighted_scores(
            model, batch, prior, options["iw_samples"], options["iw_chunk_size"], generators["iw"]
        )
        out["nll"] = scores["nll"]
        if prior is not None:
            out["nll_aggregate"], out["kl_aggregate"] = scores["nll_prior"], scores["kl_prior"]
        out["mu"], out["logvar"] = mu.double(), logvar.double()  # (B, Z), kept on the device for MI
        if options["compute_bleu"]:
            _reconstructions(model, tokenizer, input_ids, mu, options["max_length"], out)
    else:
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, None)
        out["kl"] = torch.zeros_like(rec, dtype=torch.float64)
        out["nll"] = rec.double()  # exact: a language model has no latent to integrate out
    out["rec"] = rec.double()
    return out


def _reconstructions(model, tokenizer, input_ids, mu, max_length: int, out: dict) -> None:
    """Greedy reconstructions from the posterior mean (docs/evaluation.md) and their inputs, as text, into out."""
    output_ids = generate(model, z=mu, max_length=max_length)
    out["hypotheses"] = [decode_ids(tokenizer, row) for row in output_ids.tolist()]
    out["references"] = [decode_ids(tokenizer, row) for row in input_ids.tolist()]


@torch.no_grad()
def score_sentences(
    model, split: TokenizedSplit, iw_samples: int = IW_SAMPLES, batch_size: int = 32, seed: int = 0
) -> list[dict]:
    """Per-sentence likelihood scores, in the split's order: a list of dicts (floats, nats).

    nll: importance-weighted `-log p(x)` with K = iw_samples (`importance_weighted_nll`; exact
    for a language model); neg_elbo: rec (one `z ~ q(z | x)`) + kl; kl: closed form; tokens: words + EOS;
    nll_per_token. Batches are bucketed by length exactly as in `evaluation.evaluate` with the same seed
    streams, so the mean nll equals evaluate's nll for the same batch_size and seed.
    """
    if len(split) == 0:
        raise ValueError("no sentences to score")
    if model.config.has_latent and not model.config.has_posterior:
        raise ValueError(
            "a deterministic autoencoder has no likelihood p(x) to score sentences by: use a VAE or a "
            "language model"
        )
    for name, value in (("iw_samples", iw_samples), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    device = next(model.parameters()).device
    generators = stream_generators(seed, device)
    options = {"iw_samples": iw_samples, "iw_chunk_size": 50, "compute_bleu": False, "max_length": 1}
    results: list[dict | None] = [None] * len(split)
    for number, indices in enumerate(LengthBucketSampler(split.lengths, batch_size, shuffle=False).batches()):
        batch = {k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()}
        scores = score_batch(model, None, batch, options, batch_generators(generators, number))
        for row, index in enumerate(indices):
            tokens = len(split.input_ids[index]) - 1  # BOS is never predicted
            nll = float(scores["nll"][row])
            kl = float(scores["kl"][row])
            rec = float(scores["rec"][row])
            results[index] = {
                "nll": nll,
                "neg_elbo": rec + kl,
                "rec": rec,
                "kl": kl,
                "tokens": tokens,
                "nll_per_token": nll / tokens,
            }
    return results


def auroc(scores_in: Sequence[float], scores_out: Sequence[float]) -> float:
    """Area under the ROC curve for telling `out` sentences (the positive class) from `in` ones, where a
    higher score means more anomalous (e.g. nll_per_token): 1.0 separates perfectly, 0.5 is chance."""
    from sklearn.metrics import roc_auc_score

    if len(scores_in) == 0 or len(scores_out) == 0:
        raise ValueError(f"need scores on both sides, got {len(scores_in)} in and {len(scores_out)} out")
    labels = [0] * len(scores_in) + [1] * len(scores_out)
    return float(roc_auc_score(labels, [*scores_in, *scores_out]))
