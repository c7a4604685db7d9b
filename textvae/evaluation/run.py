"""Evaluation that matches the papers: IW NLL, PPL, KL, MI, AU, reconstruction BLEU, diversity, of a saved run.

`evaluate_run` loads a run and a split of a corpus (or a whole file), calls `evaluate` (split.py: every
metric of docs/evaluation.md over a tokenized split), saves the results as JSON in the run folder, and
`format_results` prints them as a table. Under torchrun the processes share the scoring and the figures
equal one process's. `training_sample` draws the training sentences reconstructed beside the split.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import datasets
import torch

from .. import distributed
from ..data.storage import TokenizedSplit
from .scoring import IW_SAMPLES
from .split import evaluate

# Training sentences reconstructed beside the evaluated split: the generalisation gap (`evaluate_run`).
TRAIN_SAMPLE = 1000

logger = logging.getLogger(__name__)

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
    ("nll_aggregate", "NLL, aggregate prior", "{:.3f}"),
    ("ppl_aggregate", "PPL, aggregate prior", "{:.2f}"),
    ("kl_aggregate", "KL to the aggregate prior", "{:.3f}"),
    ("mi", "MI", "{:.3f}"),
    ("au", "AU", "{:d}"),
    ("au_threshold", "  AU threshold", "{:g}"),
    ("kl_marginal", "KL - MI (KL of q(z) to the prior)", "{:.3f}"),
    ("recon_bleu", "reconstruction BLEU-4", "{:.2f}"),
    ("recon_bleu1", "reconstruction BLEU-1 (sentence mean)", "{:.2f}"),
    ("recon_exact", "reconstructed exactly", "{:.3f}"),
    ("train_recon_bleu", "training sample: BLEU-4", "{:.2f}"),
    ("train_recon_bleu1", "training sample: BLEU-1", "{:.2f}"),
    ("train_recon_exact", "training sample: exactly", "{:.3f}"),
    ("train_sample", "  training sentences", "{:d}"),
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
    train_sample: int | None = TRAIN_SAMPLE,
    **options,
) -> dict:
    """`evaluate` a saved run on one split of a corpus, or on a whole file; results are also saved in the run.

    data: a named corpus, folder or Hub id, of which `split` is read; or a file (text, CSV, TSV or JSONL,
    `text_column` naming the column of the last three), which is evaluated whole, every sentence of it
    (`split` is then "file"). A named corpus without a validation split is cut with the run's own seed and
    fraction, so it is evaluated on exactly the sentences training held out. `reference_lm`: a textvae
    language model run for the forward PPL of prior samples (N(0, I) and, when the run has one, the
    aggregate prior) and of interpolation steps. train_sample: reconstruct that many sentences drawn
    (with `seed`) from the training split the run was trained on as well (`training_sample`), so that the
    results show the generalisation gap; None: none. `options` go to `evaluate`.
    Under torchrun every process calls it: they share the scoring (`evaluate(..., shard=True)`), each on the
    GPU of its local rank, and the main process saves the results.
    """
    split = "validation" if split == "valid" else split
    target = distributed.setup_process_group(device or "auto")
    with distributed.shared_errors():
        model, tokenizer, sentences, split = _load_for_evaluation(
            run, data, data_dir, split, text_column, reference_lm, limit, target, options, train_sample
        )
    main = distributed.is_main_process()
    options["show_progress"] = options.get("show_progress", True) and main
    name = split if split != "file" else f"file-{Path(data).stem}"
    name = f"eval-{name}" + (f"-first{limit}" if limit else "")
    name += f"-k{options.get('iw_samples', IW_SAMPLES) if model.config.has_latent else 0}"
    progress_path = None
    if save and not distributed.is_distributed():
        # A stop costs minutes, not the hour of a K = 500 NLL: the same command resumes the scoring.
        progress_path = Path(run) / f"{name}.partial.json"
    results = evaluate(
        model,
        tokenizer,
        sentences,
        **options,
        shard=distributed.is_distributed(),
        progress_path=progress_path,
    )
    results.update(run=str(run), data=str(data), split=split, limit=limit)
    if save and main:
        from ..run_files import write_json

        write_json(Path(run) / f"{name}.json", results)
    if progress_path is not None:
        progress_path.unlink(missing_ok=True)
    distributed.barrier()  # every process returns once the results are saved
    return results


def training_sample(
    run: str | Path, count: int, seed: int = 0, data_dir: str | None = None
) -> list[str] | None:
    """`count` sentences drawn at random (with `seed`) from the training split a run was trained on (its
    train_config.json says which corpus, and the validation it held out stays out), in corpus order;
    None, with a warning, when that corpus cannot be read here (moved, or a stream)."""
    from ..data.config import DataConfig
    from ..data.corpora import load_corpus
    from ..run_files import TRAIN_CONFIG_NAME

    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"train_sample must be a positive integer, got {count!r}")
    if not (Path(run) / TRAIN_CONFIG_NAME).is_file():
        logger.warning("%s has no %s: no training sample to compare with", run, TRAIN_CONFIG_NAME)
        return None
    trained = DataConfig.from_run(run)
    if trained.streaming:
        logger.warning("%s was trained on a stream: no training sample to compare with", run)
        return None
    try:
        corpus = load_corpus(
            trained.source, data_dir=data_dir or trained.data_dir, **trained.corpus_options()
        )
    except ValueError as error:
        logger.warning("no training sample: the corpus %s was trained on cannot be read (%s)", run, error)
        return None
    train = corpus["train"]
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(train), generator=generator)[:count].sort().values.tolist()
    return train.select(rows)["text"]


def _load_for_evaluation(
    run, data, data_dir, split, text_column, reference_lm, limit, device, options, train_sample=None
):
    """(model, tokenizer, tokenized sentences, split name) for `evaluate_run`; puts the reference LM, the
    priors and the training sample (`train_split`) into `options`."""
    from ..checkpointing import load_run
    from ..data.config import DataConfig
    from ..data.corpora import load_corpus, read_sentence_file
    from ..data.token_ids import tokenize_corpus
    from ..run_files import TRAIN_CONFIG_NAME

    model, tokenizer, encoder_tokenizer = load_run(run, device)
    if reference_lm is not None:
        from .samples import load_reference_lm

        options["reference_lm"] = load_reference_lm(reference_lm, tokenizer, device)
    if model.config.has_latent:
        from ..priors.distributions import PRIOR_CONFIG_NAME, StandardPrior, load_prior

        options["priors"] = {"standard": StandardPrior(model.config.latent_dim)}
        if (Path(run) / PRIOR_CONFIG_NAME).is_file():
            options["priors"]["aggregate"] = load_prior(run, "aggregate", model.config.latent_dim)
    if Path(data).is_file():
        texts, _ = read_sentence_file(data, text_column=text_column)
        split = "file"
        part = datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": texts})})
    else:
        trained = DataConfig.from_run(run) if (Path(run) / TRAIN_CONFIG_NAME).is_file() else None
        if trained is not None and trained.streaming and split == "validation":
            # The validation sentences of its training: the held-out head of the stream, if it had one.
            from ..data.streaming import split_stream

            recipe = dataclasses.replace(
                trained,
                source=str(data),
                data_dir=data_dir or trained.data_dir,
                text_column=text_column or trained.text_column,
            )
            texts = split_stream(recipe)[1]
            part = datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": texts})})
        else:
            # The run's own cut of validation from train (seed, fraction); its training files only when
            # this is the corpus it was trained on.
            corpus_options = trained.corpus_options() if trained else {}
            if trained is not None and str(data) != trained.source:
                corpus_options.pop("train_splits")
            corpus = load_corpus(data, data_dir=data_dir, **corpus_options)
            if split not in corpus:
                raise ValueError(f"corpus {data!r} has no {split} split (it has {', '.join(corpus)})")
            part = datasets.DatasetDict({split: corpus[split]})
    if limit is not None:
        part[split] = part[split].select(range(min(limit, len(part[split]))))
    logger.info("evaluating %d sentences (%s of %s)", len(part[split]), split, data)
    if train_sample is not None and model.config.has_latent:
        texts = training_sample(run, train_sample, options.get("seed", 0), data_dir)
        if texts is not None:
            part["training_sample"] = datasets.Dataset.from_dict({"text": texts})
    tokenized = tokenize_corpus(part, tokenizer, encoder_tokenizer)
    if "training_sample" in tokenized:
        options["train_split"] = TokenizedSplit.from_dataset(tokenized["training_sample"])
    return model, tokenizer, TokenizedSplit.from_dataset(tokenized[split]), split
