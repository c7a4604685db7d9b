"""Every metric of the papers over one tokenized split: `evaluate`.

Every metric follows the definitions of docs/evaluation.md, which are those of He et al. (2019,
github.com/jxhe/vae-lagging-encoder) and Li et al. (2019): per-sentence values in nats over a whole split,
the sentence's words plus its EOS as targets (never the BOS), the KL weight 1, and the importance-weighted
NLL with K = 500 samples of `q(z | x)` (Burda et al. 2016). All randomness comes from `seed`, so a run
repeats exactly on the same device. Under torchrun the processes share the scoring of the split
(`evaluate(..., shard=True)`) and the figures equal one process's. The scores come from `scoring.py`, MI
and AU from `latent.py`, the text metrics from `text.py` and `samples.py`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .. import distributed
from ..data.bucketing import LengthBucketSampler
from ..data.storage import TokenizedSplit, collate
from ..data.tokenization import decode_ids
from ..generation import generate
from ..models.modeling import TextVAEModel
from .latent import latent_results
from .progress import ScoreProgress
from .scoring import IW_SAMPLES, batch_generators, score_batch, stream_generators
from .text import bleu_tokenization, distinct_n, reconstruction_scores, self_bleu

logger = logging.getLogger(__name__)
_MAX_LOG_PPL = math.log(1e300)  # a perplexity above this is not worth a float


@contextlib.contextmanager
def _saved_on_exit(progress_file: ScoreProgress | None):
    """Write the scores so far however the scoring ends: done, Ctrl-C or an error."""
    try:
        yield
    finally:
        if progress_file is not None:
            progress_file.save()


def _sum_names(options: dict) -> tuple[str, ...]:
    """The per-sentence scores `_score_split` sums: rec, kl, nll, and the aggregate prior's two if any."""
    extra = ("nll_aggregate", "kl_aggregate") if options.get("aggregate_prior") is not None else ()
    return ("rec", "kl", "nll", *extra)


def _score_split(
    model,
    tokenizer,
    split: TokenizedSplit,
    options: dict,
    generators: dict,
    shard: bool = False,
    progress_file: ScoreProgress | None = None,
) -> dict:
    """Sums of rec, KL and NLL (and, with an aggregate prior, of nll_aggregate and kl_aggregate) over the
    split, all posteriors (N, Z), reconstructions and references.

    shard: every process of the group scores every N-th batch; the sums are reduced and the posteriors and
    texts gathered, in the split's batch order, on every process. progress_file: batches it holds are read
    back, not scored again; the others are added to it as they are scored.
    """
    device = next(model.parameters()).device
    # Batches of similar lengths, in a fixed order: little padding, and the same random draws every run.
    batches = LengthBucketSampler(split.lengths, options["batch_size"], shuffle=False).batches()
    rank, processes = (distributed.rank(), distributed.world_size()) if shard else (0, 1)
    mine = range(rank, len(batches), processes)
    names = _sum_names(options)
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    parts = []  # (batch number, mu, logvar, hypotheses, references)
    total = sum(len(batches[number]) for number in mine)
    progress = tqdm(total=total, desc="evaluating", unit="sent", disable=not options["show_progress"])
    with progress, _saved_on_exit(progress_file):
        for number in mine:
            indices = batches[number]
            saved = progress_file.get(number, device) if progress_file is not None else None
            if saved is None:
                batch = {
                    k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()
                }
                scores = score_batch(model, tokenizer, batch, options, batch_generators(generators, number))
                batch_sums = torch.stack([scores[key].sum() for key in names])
                texts = scores["hypotheses"], scores["references"]
                posterior = [scores["mu"], scores["logvar"]]  # (B, Z) each, or None
                if progress_file is not None:
                    progress_file.add(number, batch_sums, *posterior, *texts)
            else:
                batch_sums, *posterior, hypotheses, references = saved
                texts = hypotheses, references
            sums += batch_sums
            if shard and posterior[0] is not None:  # pickled for the other processes: on the CPU
                posterior = [tensor.cpu() for tensor in posterior]
            parts.append((number, *posterior, *texts))
            progress.update(len(indices))
    if shard:
        distributed.all_reduce_sum(sums)
        parts = sorted(
            (part for group in distributed.gather_objects(parts) for part in group), key=lambda p: p[0]
        )
    totals = dict(zip(names, sums.tolist(), strict=True))
    totals["mu"] = [part[1].to(device) for part in parts if part[1] is not None]
    totals["logvar"] = [part[2].to(device) for part in parts if part[2] is not None]
    totals["hypotheses"] = [text for part in parts for text in part[3]]
    totals["references"] = [text for part in parts for text in part[4]]
    return totals


def _diversity_results(
    model, tokenizer, options: dict, generator: torch.Generator, tokenize: str, prior=None
) -> dict:
    """self-BLEU and distinct-1/2 of ancestral samples: `z ~ N(0, I)`, then words at temperature 1.

    prior: where a deterministic autoencoder's codes come from (the aggregate prior fitted to them; no
    samples without one: N(0, I) means nothing to it).
    """
    count = options["num_diversity_samples"]
    results = {"self_bleu": None, "distinct_1": None, "distinct_2": None, "num_diversity_samples": count}
    deterministic = model.config.has_latent and not model.config.has_posterior
    if deterministic and prior is None:
        results["num_diversity_samples"] = None
    if count == 0 or (deterministic and prior is None):
        return results
    parameter = next(model.parameters())
    samples = []
    for start in range(0, count, options["batch_size"]):
        size = min(options["batch_size"], count - start)
        z = None
        if deterministic:
            z = prior.sample(size, generator).to(parameter.device, parameter.dtype)
        elif model.config.has_latent:
            z = torch.randn(
                (size, model.config.latent_dim),
                generator=generator,
                device=parameter.device,
                dtype=parameter.dtype,
            )
        ids = generate(
            model,
            z=z,
            num_sequences=size,
            max_length=options["max_length"],
            do_sample=True,
            generator=generator,
        )
        samples += [decode_ids(tokenizer, row) for row in ids.tolist()]
    if options["compute_bleu"] and count >= 2:
        results["self_bleu"] = self_bleu(samples, tokenize)
    results["distinct_1"], results["distinct_2"] = distinct_n(samples, 1), distinct_n(samples, 2)
    return results


def _generation_results(
    model, tokenizer, totals, generators, tokenize, reference, priors, count, pairs, steps, max_length
) -> dict:
    """Forward PPL of greedy decodings of prior samples (one key per prior) and interpolation metrics."""
    from .samples import decode_prior_samples, forward_ppl, interpolation_results

    results = {"num_forward_samples": count if reference is not None else None}
    for kind in ("standard", "aggregate"):
        key = "forward_ppl" if kind == "standard" else "forward_ppl_aggregate"
        prior = (priors or {}).get(kind)
        results[key] = None
        if reference is not None and prior is not None and model.config.has_latent and count:
            generator = torch.Generator().manual_seed(generators["forward"].initial_seed())
            samples = decode_prior_samples(model, tokenizer, prior, count, generator, max_length=max_length)
            results[key] = forward_ppl(*reference, samples)
    keys = ("interp_endpoint_bleu", "interp_monotonicity", "interp_distinct", "interp_forward_ppl")
    results.update(dict.fromkeys(keys), interpolation_pairs=None, interpolation_steps=None)
    if model.config.has_latent and pairs and totals["references"]:
        mu = torch.cat(totals["mu"]).float()  # (N, Z), the order of `references`
        generator = torch.Generator().manual_seed(generators["interpolation"].initial_seed())
        results.update(
            interpolation_results(
                model,
                tokenizer,
                totals["references"],
                mu,
                pairs,
                steps,
                generator,
                tokenize,
                reference,
                max_length,
            )
        )
    return results


_TRAIN_KEYS = ("recon_bleu", "recon_bleu1", "recon_exact")


def _train_sample_results(
    model, tokenizer, train_split: TokenizedSplit | None, options: dict, tokenize
) -> dict:
    """The reconstruction figures on a sample of training sentences, `train_` before each name (the
    generalisation gap is their difference from the evaluated split's); all None without a sample (or
    for a language model, which reconstructs nothing)."""
    results = {f"train_{key}": None for key in _TRAIN_KEYS}
    results["train_sample"] = None
    if (
        train_split is None
        or not model.config.has_latent
        or not options["compute_bleu"]
        or not len(train_split)
    ):
        return results
    device = next(model.parameters()).device
    hypotheses, references = [], []
    batches = LengthBucketSampler(train_split.lengths, options["batch_size"], shuffle=False).batches()
    with torch.no_grad():
        for indices in tqdm(batches, desc="training sample", disable=not options["show_progress"]):
            batch = {
                k: v.to(device) for k, v in collate(train_split, indices, model.config.pad_token_id).items()
            }
            mu, _ = model.encode_batch(batch)
            output_ids = generate(model, z=mu, max_length=options["max_length"])
            hypotheses += [decode_ids(tokenizer, row) for row in output_ids.tolist()]
            references += [decode_ids(tokenizer, row) for row in batch["input_ids"].tolist()]
    scores = reconstruction_scores(hypotheses, references, tokenize)
    results.update({f"train_{key}": scores[key] for key in _TRAIN_KEYS})
    results["train_sample"] = len(train_split)
    return results


def _likelihood_results(totals: dict, split: TokenizedSplit, iw_samples: int | None) -> dict:
    """Per-sentence means and perplexities from the split's sums (docs/evaluation.md)."""
    count, num_tokens = len(split), split.num_target_tokens()
    neg_elbo = totals["rec"] + totals["kl"]
    return {
        "num_sentences": count,
        "num_tokens": num_tokens,
        "rec": totals["rec"] / count,
        "kl": totals["kl"] / count,
        "neg_elbo": neg_elbo / count,
        "ppl_bound": math.exp(neg_elbo / num_tokens),
        "nll": totals["nll"] / count,
        "ppl": math.exp(totals["nll"] / num_tokens),
        "iw_samples": iw_samples,
        **_aggregate_likelihood(totals, count, num_tokens),
    }


def _aggregate_likelihood(totals: dict, count: int, num_tokens: int) -> dict:
    """nll_aggregate, ppl_aggregate, kl_aggregate from the split's sums: the same decoder with the aggregate
    posterior as its prior (two-stage VAE), scored on the same K draws; all None without an aggregate prior,
    ppl None past float range."""
    if "nll_aggregate" not in totals:
        return dict.fromkeys(("nll_aggregate", "ppl_aggregate", "kl_aggregate"))
    per_token = totals["nll_aggregate"] / num_tokens
    if per_token > _MAX_LOG_PPL:
        # A mixture of posterior means saved without the posteriors' variance is nearly a point in a
        # dimension whose means never move (an inactive unit), where q(z | x) spreads over N(0, 1).
        logger.warning(
            "the aggregate prior gives the posterior's draws almost no density (%.3g nats per token): "
            "its perplexity is out of float range; inactive latent dimensions do this with a prior fitted "
            "before it kept the posteriors' variance (fit it again: textvae fit-prior RUN)",
            per_token,
        )
    return {
        "nll_aggregate": totals["nll_aggregate"] / count,
        "ppl_aggregate": math.exp(per_token) if per_token <= _MAX_LOG_PPL else None,
        "kl_aggregate": totals["kl_aggregate"] / count,
    }


def _check_options(split: TokenizedSplit, options: dict) -> None:
    if len(split) == 0:
        raise ValueError("the split to evaluate is empty (0 sentences)")
    for name in ("iw_samples", "batch_size", "iw_chunk_size", "max_length"):
        if not isinstance(options[name], int) or options[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {options[name]!r}")
    for name in ("num_diversity_samples", "num_forward_samples", "interpolation_pairs"):
        if not isinstance(options[name], int) or options[name] < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {options[name]!r}")
    if options["interpolation_pairs"] and options["interpolation_steps"] < 3:
        raise ValueError(f"interpolation steps must be at least 3, got {options['interpolation_steps']}")
    if options["num_diversity_samples"] < 0:
        raise ValueError(f"num_diversity_samples must be >= 0, got {options['num_diversity_samples']}")


def evaluate(
    model: TextVAEModel,
    tokenizer: PreTrainedTokenizerBase,
    split: TokenizedSplit,
    *,
    iw_samples: int = IW_SAMPLES,
    batch_size: int = 32,
    iw_chunk_size: int = 50,
    au_threshold: float = 0.01,
    num_diversity_samples: int = 100,
    max_length: int = 100,
    seed: int = 0,
    show_progress: bool = True,
    compute_bleu: bool = True,
    reference_lm=None,
    priors: dict | None = None,
    num_forward_samples: int = 1000,
    interpolation_pairs: int = 100,
    interpolation_steps: int = 5,
    shard: bool = False,
    progress_path: str | Path | None = None,
    progress_every_seconds: float = 300.0,
    train_split: TokenizedSplit | None = None,
) -> dict:
    """Every metric of docs/evaluation.md over a split, as a dict of JSON-serialisable values.

    Likelihood (nats, per-sentence means over the split):
    - rec: `-log p(x | z)`, one `z ~ q(z | x)` per sentence; kl: closed form; neg_elbo: rec + kl (weight 1);
    - nll: importance weighted with K = iw_samples (`importance_weighted_nll`);
    - ppl_bound, ppl: `exp(sum neg_elbo / num_tokens)`, `exp(sum nll / num_tokens)`, where num_tokens
      counts the words plus one EOS per sentence (73,760 on PTB valid);
    - nll_aggregate, ppl_aggregate, kl_aggregate: when `priors` holds an "aggregate" one (the mixture
      `fit-prior` fitted to the training posteriors' means), the same decoder's NLL with the aggregate
      posterior as its prior (that mixture spread by the posteriors' mean variance,
      `AggregatePrior.spread_by_posteriors`), on the same K draws (`importance_weighted_scores`), and the
      Monte Carlo KL to it; else None.
    Latent: mi (`mutual_information`), kl_marginal (kl - mi: KL(q(z) || p(z)), what the code spends on
    separating sentences beyond I(x; z)), au with au_variances and au_threshold (`active_units`).
    Reconstruction (greedy from the posterior mean): recon_bleu (corpus BLEU-4; bleu_signature says how
    it was scored), recon_bleu1 (sentence BLEU-1 averaged over sentences) and recon_exact (the share
    rebuilt word for word), `text.reconstruction_scores`; with `train_split` (a sample of the
    training sentences) the same three as train_recon_bleu, train_recon_bleu1, train_recon_exact, with
    train_sample its size: the generalisation gap.
    Diversity: self_bleu, distinct_1, distinct_2 over num_diversity_samples ancestral samples from the
    prior (`z ~ N(0, I)`, then words at temperature 1). Also num_sentences, iw_samples and seed.

    A language model (no latent) gets the exact nll = rec, kl = 0.0, and None ("not applicable") for
    iw_samples, mi, au, au_variances and recon_bleu. iw_chunk_size is the number of samples per sentence
    in one decoder call, so decoder batches hold batch_size * iw_chunk_size rows: lower either to save
    memory. compute_bleu=False skips the reconstructions and self-BLEU. The model runs in eval mode (no
    dropout) on its own device and gets its training mode back afterwards.

    shard: in a process group (torchrun), every process calls `evaluate` and scores its share of the
    split's batches (the K-sample NLL is most of the work); sums are reduced and the posteriors (for MI
    and AU) and reconstructions gathered, so every process returns the figures one process would, up to
    the order of the sums. The prior samples and interpolations are drawn by every process alike.

    progress_path: a JSON file where the scores of the split's batches are kept as they come (every
    progress_every_seconds), so that a stopped evaluation called again with the same model, split, options
    and seed on the same device scores only the batches it had not: the figures equal an uninterrupted
    run's exactly at the same thread count (`progress.ScoreProgress`). The caller removes the
    file once the results are saved. Not with shard.
    """
    options = dict(
        iw_samples=iw_samples, batch_size=batch_size, iw_chunk_size=iw_chunk_size, max_length=max_length,
        num_diversity_samples=num_diversity_samples, show_progress=show_progress, compute_bleu=compute_bleu,
        num_forward_samples=num_forward_samples, interpolation_pairs=interpolation_pairs,
        interpolation_steps=interpolation_steps,
    )  # fmt: skip
    _check_options(split, options)
    has_latent = model.config.has_latent
    aggregate = (priors or {}).get("aggregate") if has_latent else None
    # nll_aggregate scores under the aggregate posterior's density: the mixture of means spread by the
    # posteriors' variance (the mixture itself for a prior saved without it).
    options["aggregate_prior"] = None if aggregate is None else aggregate.spread_by_posteriors()
    tokenize = bleu_tokenization(tokenizer)
    generators = stream_generators(seed, next(model.parameters()).device)
    was_training = model.training
    model.eval()
    generation_options = (reference_lm, priors, num_forward_samples, interpolation_pairs, interpolation_steps)
    progress_file = None
    if progress_path is not None and not shard:
        progress_file = ScoreProgress.for_scoring(
            progress_path, model, split, options, seed, progress_every_seconds
        )
    try:
        with torch.no_grad():
            totals = _score_split(model, tokenizer, split, options, generators, shard, progress_file)
            diversity = _diversity_results(
                model, tokenizer, options, generators["prior"], tokenize, (priors or {}).get("aggregate")
            )
            generation = _generation_results(
                model, tokenizer, totals, generators, tokenize, *generation_options, max_length
            )
    finally:
        model.train(was_training)
    results = _likelihood_results(totals, split, iw_samples if model.config.has_posterior else None)
    if has_latent and not model.config.has_posterior:
        # A deterministic autoencoder: rec is its reconstruction loss; no KL, no likelihood (N/A).
        not_applicable = ("kl", "neg_elbo", "ppl_bound", "nll", "ppl")
        results.update(dict.fromkeys(not_applicable + tuple(_aggregate_likelihood({}, 1, 1))))
    results.update(latent_results(totals, au_threshold, generators["mi"]))
    results.update(dict.fromkeys(("recon_bleu", "recon_bleu1", "recon_exact", "bleu_signature")))
    if totals["hypotheses"]:
        results.update(reconstruction_scores(totals["hypotheses"], totals["references"], tokenize))
    if results["kl"] is not None and results["mi"] is not None:
        # What the code spends on telling sentences apart beyond what it says of them: KL(q(z) || p(z)).
        results["kl_marginal"] = results["kl"] - results["mi"]
    else:
        results["kl_marginal"] = None
    results.update(_train_sample_results(model, tokenizer, train_split, options, tokenize))
    results.update(diversity)
    results.update(generation)
    results["seed"] = seed
    if results["nll"] is not None:
        logger.info("evaluated %d sentences: nll %.3f, ppl %.2f", len(split), results["nll"], results["ppl"])
    return results
