"""Evaluation that matches the papers: IW NLL, PPL, KL, MI, AU, reconstruction BLEU, diversity.

Every metric follows the definitions of BENCHMARKS.md, which are those of He et al. (2019,
github.com/jxhe/vae-lagging-encoder) and Li et al. (2019): per-sentence values in nats over a whole split,
the sentence's words plus its EOS as targets (never the BOS), the KL weight 1, and the importance-weighted
NLL with K = 500 samples of `q(z | x)` (Burda et al. 2016). All randomness comes from `seed`, so a run
repeats exactly on the same device. Under torchrun the processes share the scoring of the split
(`evaluate(..., shard=True)`, which `evaluate_run` sets) and the figures equal one process's.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from . import distributed
from .data import LengthBucketSampler, TokenizedSplit, collate
from .distributed import derived_seed
from .generation import generate
from .modeling import TextVAEModel, gaussian_kl, gaussian_log_density
from .text_metrics import bleu_tokenization, corpus_bleu, distinct_n, self_bleu
from .tokenization import decode_ids

logger = logging.getLogger(__name__)

# Independent random streams, so that changing one metric's setting (say K) leaves the others unchanged.
_STREAMS = ("elbo", "iw", "mi", "prior", "forward", "interpolation")
# Most float64 elements of one (rows, N, Z) block of the aggregate posterior in `mutual_information`.
_MI_BLOCK_ELEMENTS = 1 << 22


def _encode(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior `mu`, `logvar` (B, Z) of a collated batch; a pretrained encoder reads its own ids."""
    if "encoder_input_ids" in batch:
        return model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
    return model.encode(batch["input_ids"], batch["attention_mask"])


@torch.no_grad()
def importance_weighted_nll(
    model: TextVAEModel,
    batch: dict[str, torch.Tensor],
    iw_samples: int = 500,
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
    if iw_samples < 1:
        raise ValueError(f"iw_samples must be positive, got {iw_samples}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if not model.config.has_latent:
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, None)
        return rec.double()
    mu, logvar = _encode(model, batch)  # (B, Z)
    batch_size, latent_dim = mu.shape
    eps = torch.randn(
        (batch_size, iw_samples, latent_dim), generator=generator, device=mu.device, dtype=mu.dtype
    )
    z_all = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps  # (B, K, Z)
    z64, mu64, logvar64 = z_all.double(), mu[:, None].double(), logvar[:, None].double()
    # log p(z_k) - log q(z_k | x), (B, K): the prior is N(0, I).
    log_ratio = gaussian_log_density(
        z64, torch.zeros_like(z64), torch.zeros_like(z64)
    ) - gaussian_log_density(z64, mu64, logvar64)
    log_total = torch.full((batch_size,), -math.inf, dtype=torch.float64, device=mu.device)
    for start in range(0, iw_samples, chunk_size):
        z = z_all[:, start : start + chunk_size]  # (B, C, Z)
        count = z.size(1)
        rec, _ = model.reconstruction_loss(
            input_ids.repeat_interleave(count, dim=0),  # (B * C, T): the C rows of a sentence are adjacent
            attention_mask.repeat_interleave(count, dim=0),
            z.reshape(batch_size * count, latent_dim),
        )
        log_weights = log_ratio[:, start : start + count] - rec.view(batch_size, count).double()  # (B, C)
        log_total = torch.logaddexp(log_total, log_weights.logsumexp(dim=1))
    return -(log_total - math.log(iw_samples))


def mutual_information(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> float:
    """`I_q(x; z)` over a whole split by Monte Carlo (He et al. 2019, Eq. 5; their `calc_mi`).

    mu, logvar: (N, Z) posteriors of all N sentences. `I = E_x E_q(z|x)[log q(z | x)] - E_q(z)[log q(z)]`:
    the first term in closed form (minus the Gaussian entropy), the second with one `z_n ~ q(z | x_n)`
    per sentence and the aggregate posterior `log q(z_n) = logsumexp_m log q(z_n | x_m) - log N` over all N
    sentences, computed in blocks of rows. Equals `E_x[KL(q(z|x) || p(z))] - KL(q(z) || p(z))`; it can
    come out slightly negative near 0.
    """
    if mu.dim() != 2 or mu.shape != logvar.shape or mu.size(0) < 1:
        raise ValueError(
            f"mu and logvar must both be (N, Z) with N >= 1, got {tuple(mu.shape)}, {tuple(logvar.shape)}"
        )
    mu, logvar = mu.double(), logvar.double()
    count, latent_dim = mu.shape
    neg_entropy = (-0.5 * latent_dim * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(dim=1)).mean()
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # (N, Z)
    rows = max(1, _MI_BLOCK_ELEMENTS // (count * latent_dim))
    log_qz = torch.cat(
        [
            gaussian_log_density(z[start : start + rows, None], mu[None], logvar[None]).logsumexp(dim=1)
            for start in range(0, count, rows)
        ]
    ) - math.log(count)  # (N,)
    return float(neg_entropy - log_qz.mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Active units (Burda et al. 2016; He et al. 2019): dimensions where `Var_x(E_q[z | x]) >= threshold`.

    mu: (N, Z) posterior means of the whole split, N >= 2. Returns the count and the (Z,) float64
    variances, with the N - 1 denominator of He et al.'s `calc_au`.
    """
    if mu.dim() != 2 or mu.size(0) < 2:
        raise ValueError(f"mu must be (N, Z) with N >= 2 sentences, got shape {tuple(mu.shape)}")
    variances = mu.double().var(dim=0, correction=1)  # (Z,)
    return int((variances >= threshold).sum()), variances


def _generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """One generator per random stream, on the model's device, all derived from `seed`."""
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


def _score_batch(model, tokenizer, batch: dict, options: dict, generators: dict) -> dict:
    """Per-sentence rec, KL and IW NLL of one batch, its posteriors and its greedy reconstructions."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    out = {"mu": None, "logvar": None, "hypotheses": [], "references": []}
    if model.config.has_latent:
        mu, logvar = _encode(model, batch)  # (B, Z)
        eps = torch.randn(mu.shape, generator=generators["elbo"], device=mu.device, dtype=mu.dtype)
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, mu + torch.exp(0.5 * logvar) * eps)
        out["kl"] = gaussian_kl(mu.double(), logvar.double()).sum(dim=1)  # (B,)
        out["nll"] = importance_weighted_nll(
            model, batch, options["iw_samples"], options["iw_chunk_size"], generators["iw"]
        )
        out["mu"], out["logvar"] = mu.double(), logvar.double()  # (B, Z), kept on the device for MI
        if options["compute_bleu"]:
            # Greedy reconstruction from the posterior mean, as in BENCHMARKS.md.
            output_ids = generate(model, z=mu, max_length=options["max_length"])
            out["hypotheses"] = [decode_ids(tokenizer, row) for row in output_ids.tolist()]
            out["references"] = [decode_ids(tokenizer, row) for row in input_ids.tolist()]
    else:
        rec, _ = model.reconstruction_loss(input_ids, attention_mask, None)
        out["kl"] = torch.zeros_like(rec, dtype=torch.float64)
        out["nll"] = rec.double()  # exact: a language model has no latent to integrate out
    out["rec"] = rec.double()
    return out


def _score_split(
    model, tokenizer, split: TokenizedSplit, options: dict, generators: dict, shard: bool = False
) -> dict:
    """Sums of rec, KL and NLL over the split, all posteriors (N, Z), reconstructions and references.

    shard: every process of the group scores every N-th batch; the sums are reduced and the posteriors and
    texts gathered, in the split's batch order, on every process.
    """
    device = next(model.parameters()).device
    # Batches of similar lengths, in a fixed order: little padding, and the same random draws every run.
    batches = LengthBucketSampler(split.lengths, options["batch_size"], shuffle=False).batches()
    rank, processes = (distributed.rank(), distributed.world_size()) if shard else (0, 1)
    mine = range(rank, len(batches), processes)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # rec, kl, nll
    parts = []  # (batch number, mu, logvar, hypotheses, references)
    total = sum(len(batches[number]) for number in mine)
    progress = tqdm(total=total, desc="evaluating", unit="sent", disable=not options["show_progress"])
    with progress:
        for number in mine:
            indices = batches[number]
            batch = {k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()}
            scores = _score_batch(model, tokenizer, batch, options, batch_generators(generators, number))
            sums += torch.stack([scores[key].sum() for key in ("rec", "kl", "nll")])
            posterior = [scores["mu"], scores["logvar"]]  # (B, Z) each, or None
            if shard and posterior[0] is not None:  # pickled for the other processes: on the CPU
                posterior = [tensor.cpu() for tensor in posterior]
            parts.append((number, *posterior, scores["hypotheses"], scores["references"]))
            progress.update(len(indices))
    if shard:
        distributed.all_reduce_sum(sums)
        parts = sorted(
            (part for group in distributed.gather_objects(parts) for part in group), key=lambda p: p[0]
        )
    totals = dict(zip(("rec", "kl", "nll"), sums.tolist(), strict=True))
    totals["mu"] = [part[1].to(device) for part in parts if part[1] is not None]
    totals["logvar"] = [part[2].to(device) for part in parts if part[2] is not None]
    totals["hypotheses"] = [text for part in parts for text in part[3]]
    totals["references"] = [text for part in parts for text in part[4]]
    return totals


def _latent_results(totals: dict, au_threshold: float, generator: torch.Generator) -> dict:
    """MI, AU and their details from the posteriors of the whole split; None for a language model."""
    results = {"mi": None, "au": None, "au_threshold": au_threshold, "au_variances": None}
    if not totals["mu"]:
        return results
    mu, logvar = torch.cat(totals["mu"]), torch.cat(totals["logvar"])  # (N, Z)
    results["mi"] = mutual_information(mu, logvar, generator)
    if mu.size(0) >= 2:
        results["au"], variances = active_units(mu, au_threshold)
        results["au_variances"] = variances.tolist()
    return results


def _diversity_results(model, tokenizer, options: dict, generator: torch.Generator, tokenize: str) -> dict:
    """self-BLEU and distinct-1/2 of ancestral samples: `z ~ N(0, I)`, then words at temperature 1."""
    count = options["num_diversity_samples"]
    results = {"self_bleu": None, "distinct_1": None, "distinct_2": None, "num_diversity_samples": count}
    if count == 0:
        return results
    parameter = next(model.parameters())
    samples = []
    for start in range(0, count, options["batch_size"]):
        size = min(options["batch_size"], count - start)
        z = None
        if model.config.has_latent:
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
    from .generation_metrics import decode_prior_samples, forward_ppl, interpolation_results

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


def _likelihood_results(totals: dict, split: TokenizedSplit, iw_samples: int | None) -> dict:
    """Per-sentence means and perplexities from the split's sums (BENCHMARKS.md)."""
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
    iw_samples: int = 500,
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
) -> dict:
    """Every metric of BENCHMARKS.md over a split, as a dict of JSON-serialisable values.

    Likelihood (nats, per-sentence means over the split):
    - rec: `-log p(x | z)`, one `z ~ q(z | x)` per sentence; kl: closed form; neg_elbo: rec + kl (weight 1);
    - nll: importance weighted with K = iw_samples (`importance_weighted_nll`);
    - ppl_bound, ppl: `exp(sum neg_elbo / num_tokens)`, `exp(sum nll / num_tokens)`, where num_tokens
      counts the words plus one EOS per sentence (73,760 on PTB valid).
    Latent: mi (`mutual_information`), au with au_variances and au_threshold (`active_units`), recon_bleu
    (corpus BLEU of greedy reconstructions from the posterior mean; bleu_signature says how it was scored).
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
    """
    options = dict(
        iw_samples=iw_samples, batch_size=batch_size, iw_chunk_size=iw_chunk_size, max_length=max_length,
        num_diversity_samples=num_diversity_samples, show_progress=show_progress, compute_bleu=compute_bleu,
        num_forward_samples=num_forward_samples, interpolation_pairs=interpolation_pairs,
        interpolation_steps=interpolation_steps,
    )  # fmt: skip
    _check_options(split, options)
    has_latent = model.config.has_latent
    tokenize = bleu_tokenization(tokenizer)
    generators = _generators(seed, next(model.parameters()).device)
    was_training = model.training
    model.eval()
    generation_options = (reference_lm, priors, num_forward_samples, interpolation_pairs, interpolation_steps)
    try:
        with torch.no_grad():
            totals = _score_split(model, tokenizer, split, options, generators, shard)
            diversity = _diversity_results(model, tokenizer, options, generators["prior"], tokenize)
            generation = _generation_results(
                model, tokenizer, totals, generators, tokenize, *generation_options, max_length
            )
    finally:
        model.train(was_training)
    results = _likelihood_results(totals, split, iw_samples if has_latent else None)
    results.update(_latent_results(totals, au_threshold, generators["mi"]))
    results["recon_bleu"] = results["bleu_signature"] = None
    if totals["hypotheses"]:
        results["recon_bleu"], results["bleu_signature"] = corpus_bleu(
            totals["hypotheses"], totals["references"], tokenize
        )
    results.update(diversity)
    results.update(generation)
    results["seed"] = seed
    logger.info("evaluated %d sentences: nll %.3f, ppl %.2f", len(split), results["nll"], results["ppl"])
    return results


_TABLE_ROWS = (
    ("num_sentences", "sentences", "{:d}"),
    ("num_tokens", "tokens (words + EOS)", "{:d}"),
    ("rec", "rec (nats / sentence)", "{:.3f}"),
    ("kl", "KL", "{:.3f}"),
    ("neg_elbo", "-ELBO", "{:.3f}"),
    ("ppl_bound", "PPL bound (from -ELBO)", "{:.2f}"),
    ("nll", "NLL (importance weighted)", "{:.3f}"),
    ("iw_samples", "  samples K", "{:d}"),
    ("ppl", "PPL (from NLL)", "{:.2f}"),
    ("mi", "MI", "{:.3f}"),
    ("au", "AU", "{:d}"),
    ("au_threshold", "  AU threshold", "{:g}"),
    ("recon_bleu", "reconstruction BLEU", "{:.2f}"),
    ("self_bleu", "self-BLEU (prior samples)", "{:.2f}"),
    ("distinct_1", "distinct-1", "{:.4f}"),
    ("distinct_2", "distinct-2", "{:.4f}"),
    ("num_diversity_samples", "  prior samples", "{:d}"),
    ("forward_ppl", "forward PPL, N(0, I) samples", "{:.2f}"),
    ("forward_ppl_aggregate", "forward PPL, aggregate prior", "{:.2f}"),
    ("num_forward_samples", "  samples (greedy from z)", "{:d}"),
    ("interp_endpoint_bleu", "interpolation endpoint BLEU", "{:.2f}"),
    ("interp_monotonicity", "interpolation monotonicity", "{:.3f}"),
    ("interp_distinct", "interpolation distinct", "{:.3f}"),
    ("interp_forward_ppl", "interpolation forward PPL", "{:.2f}"),
    ("interpolation_pairs", "  pairs", "{:d}"),
    ("interpolation_steps", "  steps", "{:d}"),
    ("seed", "seed", "{:d}"),
    ("bleu_signature", "BLEU signature", "{}"),
)


def format_results(results: dict) -> str:
    """A two-column table of `evaluate`'s results for the terminal; N/A for metrics that do not apply."""
    width = max(len(label) for _, label, _ in _TABLE_ROWS)
    lines = []
    for key, label, fmt in _TABLE_ROWS:
        if key in results:
            value = results[key]
            lines.append(f"{label:<{width}}  {'N/A' if value is None else fmt.format(value)}")
    return "\n".join(lines)


def evaluate_run(
    run: str | Path,
    data: str = "ptb",
    data_dir: str | None = None,
    split: str = "validation",
    *,
    text_column: str | None = None,
    reference_lm: str | Path | None = None,
    limit: int | None = None,
    device: str | None = None,
    save: bool = True,
    **options,
) -> dict:
    """`evaluate` a saved run on one split of a corpus, or on a whole file; results are also saved in the run.

    data: a named corpus, folder or Hub id, of which `split` is read; or a file (text, CSV, TSV or JSONL,
    `text_column` naming the column of the last three), which is evaluated whole, every sentence of it
    (`split` is then "file"). A named corpus without a validation split is cut with the run's own seed and
    fraction, so it is evaluated on exactly the sentences training held out. `reference_lm`: a textvae
    language model run for the forward PPL of prior samples (N(0, I) and, when the run has one, the
    aggregate prior) and of interpolation steps. `options` go to `evaluate`.
    Under torchrun every process calls it: they share the scoring (`evaluate(..., shard=True)`), each on the
    GPU of its local rank, and the main process saves the results.
    """
    split = "validation" if split == "valid" else split
    target = distributed.setup_process_group(device or "auto")
    with distributed.shared_errors():
        model, tokenizer, sentences, split = _load_for_evaluation(
            run, data, data_dir, split, text_column, reference_lm, limit, target, options
        )
    main = distributed.is_main_process()
    options["show_progress"] = options.get("show_progress", True) and main
    results = evaluate(model, tokenizer, sentences, **options, shard=distributed.is_distributed())
    results.update(run=str(run), data=str(data), split=split, limit=limit)
    if save and main:
        from .checkpointing import write_json

        name = split if split != "file" else f"file-{Path(data).stem}"
        name = f"eval-{name}" + (f"-first{limit}" if limit else "") + f"-k{results['iw_samples'] or 0}.json"
        write_json(Path(run) / name, results)
    distributed.barrier()  # every process returns once the results are saved
    return results


def _load_for_evaluation(run, data, data_dir, split, text_column, reference_lm, limit, device, options):
    """(model, tokenizer, tokenized sentences, split name) for `evaluate_run`; puts the reference LM and
    the priors into `options`."""
    from .checkpointing import TRAIN_CONFIG_NAME, load_run, read_json
    from .data import load_corpus, read_sentence_file, tokenize_corpus
    from .training_config import TrainConfig

    model, tokenizer, encoder_tokenizer = load_run(run, device)
    if reference_lm is not None:
        from .generation_metrics import load_reference_lm

        options["reference_lm"] = load_reference_lm(reference_lm, tokenizer, device)
    if model.config.has_latent:
        from .priors import PRIOR_CONFIG_NAME, StandardPrior, load_prior

        options["priors"] = {"standard": StandardPrior(model.config.latent_dim)}
        if (Path(run) / PRIOR_CONFIG_NAME).is_file():
            options["priors"]["aggregate"] = load_prior(run, "aggregate", model.config.latent_dim)
    if Path(data).is_file():
        texts, _ = read_sentence_file(data, text_column=text_column)
        split = "file"
        part = datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": texts})})
    else:
        saved = Path(run) / TRAIN_CONFIG_NAME
        trained = TrainConfig.from_dict(read_json(saved)) if saved.is_file() else None
        corpus = load_corpus(data, data_dir=data_dir, **(trained.corpus_options() if trained else {}))
        if split not in corpus:
            raise ValueError(f"corpus {data!r} has no {split} split (it has {', '.join(corpus)})")
        part = datasets.DatasetDict({split: corpus[split]})
    if limit is not None:
        part[split] = part[split].select(range(min(limit, len(part[split]))))
    logger.info("evaluating %d sentences (%s of %s)", len(part[split]), split, data)
    tokenized = tokenize_corpus(part, tokenizer, encoder_tokenizer)
    return model, tokenizer, TokenizedSplit.from_dataset(tokenized[split]), split
