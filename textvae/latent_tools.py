"""What users do with `z`: nearest neighbours (with a corpus cache), attribute vectors, analogies, scores, probes.

Everything here works on plain tensors (posterior means `mu`, (N, Z)) or on a model and a tokenized split,
so it runs the same from Python, the pipeline (`TextVAEPipeline.neighbours`, `transfer`, `analogy`,
`score`, `probe`) and the CLI. scikit-learn, used by `auroc` and the probes, is imported where needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .data import LengthBucketSampler, TokenizedSplit, collate
from .evaluation import _generators, _score_batch, batch_generators
from .run_files import write_text_atomically

logger = logging.getLogger(__name__)

METRICS = ("cosine", "l2")
CACHE_PREFIX = "latent-cache-"
# Files whose bytes identify a trained model (see checkpointing.py).
_MODEL_FILES = ("model.safetensors", "config.json")


# ---------------------------------------------------------------- neighbours


def nearest_neighbours(
    query: torch.Tensor, corpus: torch.Tensor, k: int = 5, metric: str = "cosine", chunk_size: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest corpus vectors of each query: (scores (Q, k), indices (Q, k)), nearest first.

    query: (Q, Z) or (Z,); corpus: (N, Z). metric `cosine` scores by cosine similarity (higher is nearer),
    `l2` by Euclidean distance (lower is nearer). k is capped at N. The corpus is scanned `chunk_size`
    rows at a time with a running top-k, so memory is (Q, chunk_size) whatever N; a brute-force scan of
    100,000 vectors of size 32 takes a few milliseconds per query (scripts/bench_neighbours.py).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if query.dim() == 1:
        query = query[None]
    if query.dim() != 2 or corpus.dim() != 2 or query.size(1) != corpus.size(1):
        raise ValueError(
            f"need (Q, Z) queries and (N, Z) corpus, got {tuple(query.shape)}, {tuple(corpus.shape)}"
        )
    if corpus.size(0) == 0:
        raise ValueError("the corpus is empty (0 vectors)")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    k = min(k, corpus.size(0))
    query = query.to(corpus.device, corpus.dtype)
    if metric == "cosine":
        query = torch.nn.functional.normalize(query, dim=1)
    else:
        query_norms = query.pow(2).sum(dim=1, keepdim=True)  # (Q, 1)
    best_scores = query.new_empty(query.size(0), 0)
    best_indices = torch.empty(query.size(0), 0, dtype=torch.long, device=query.device)
    for start in range(0, corpus.size(0), chunk_size):
        chunk = corpus[start : start + chunk_size]  # (C, Z)
        if metric == "cosine":
            scores = query @ torch.nn.functional.normalize(chunk, dim=1).T  # (Q, C)
        else:
            # Negated squared distances, so that higher is nearer for both metrics: |q|^2 - 2 q.c + |c|^2,
            # in one matrix product and in-place updates (no (Q, C, Z) differences).
            scores = torch.addmm(chunk.pow(2).sum(dim=1)[None], query, chunk.T, alpha=-2)  # (Q, C)
            scores = scores.add_(query_norms).clamp_min_(0).neg_()
        top = scores.topk(min(k, chunk.size(0)), dim=1)
        best_scores = torch.cat([best_scores, top.values], dim=1)
        best_indices = torch.cat([best_indices, top.indices + start], dim=1)
        if best_scores.size(1) > k:
            top = best_scores.topk(k, dim=1)
            best_scores, best_indices = top.values, best_indices.gather(1, top.indices)
    order = best_scores.argsort(dim=1, descending=True)  # chunks were merged unordered
    best_scores, best_indices = best_scores.gather(1, order), best_indices.gather(1, order)
    if metric == "l2":
        best_scores = (-best_scores).sqrt()
    return best_scores, best_indices


def _sha256_files(paths: Sequence[Path], extra: str = "") -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    digest.update(extra.encode("utf-8"))
    return digest.hexdigest()


def model_fingerprint(pipeline) -> str:
    """sha256 of the run's `model.safetensors` and `config.json`; of the weights in memory without a run."""
    run_dir = getattr(pipeline, "run_dir", None)
    if run_dir is not None and all((Path(run_dir) / name).is_file() for name in _MODEL_FILES):
        return _sha256_files([Path(run_dir) / name for name in _MODEL_FILES])
    digest = hashlib.sha256(pipeline.model.config.to_json_string().encode("utf-8"))
    for name, tensor in sorted(pipeline.model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encode_corpus_cached(
    pipeline,
    sentences: Sequence[str],
    corpus_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> torch.Tensor:
    """Posterior means (N, Z) of a corpus file's `sentences`, cached in `cache_dir` (the run folder).

    The cache, `latent-cache-<hash of the corpus path and columns>.safetensors`, holds `mu` and as
    metadata the model fingerprint (`model_fingerprint`), the corpus fingerprint (sha256 of the file's
    bytes and the column choice), the count and latent_dim. It is reused when all match and otherwise
    rebuilt and replaced atomically (temporary file, then rename). Without a cache folder (a pipeline
    built in memory and no `cache_dir`) the corpus is simply encoded.
    """
    from safetensors import safe_open
    from safetensors.torch import save as safetensors_bytes

    corpus_path = Path(corpus_path).resolve()
    cache_dir = cache_dir if cache_dir is not None else getattr(pipeline, "run_dir", None)
    if cache_dir is None:
        logger.info("no cache folder: encoding %d corpus sentences without a cache", len(sentences))
        return pipeline.encode(sentences)[0]
    columns = f"text_column={text_column}|label_column={label_column}"
    name = hashlib.sha256(f"{corpus_path}|{columns}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{CACHE_PREFIX}{name}.safetensors"
    metadata = {
        "model_fingerprint": model_fingerprint(pipeline),
        "corpus_fingerprint": _sha256_files([corpus_path], columns),
        "corpus_path": str(corpus_path),
        "count": str(len(sentences)),
        "latent_dim": str(pipeline.model.config.latent_dim),
    }
    if cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as handle:
                saved = handle.metadata() or {}
                if all(saved.get(key) == value for key, value in metadata.items()):
                    logger.info("reusing the latent cache %s (%s sentences)", cache, metadata["count"])
                    return handle.get_tensor("mu")
        except Exception as error:  # a truncated or foreign file: rebuild it
            logger.warning("cannot read the latent cache %s (%s)", cache, error)
        logger.info("the model or the corpus changed: rebuilding the latent cache %s", cache)
    else:
        logger.info("building the latent cache %s", cache)
    mu = pipeline.encode(sentences)[0].contiguous()  # (N, Z)
    # Atomic: a reader sees the old cache or the new one.
    write_text_atomically(cache, safetensors_bytes({"mu": mu}, metadata=metadata))
    return mu


# ---------------------------------------------------------------- latent arithmetic


def attribute_vector(source_mu: torch.Tensor, target_mu: torch.Tensor) -> torch.Tensor:
    """(Z,) `mean(target_mu) - mean(source_mu)`: the offset that moves a sentence from one attribute to
    the other by latent arithmetic (Bowman et al. 2016; Li et al. 2020, Optimus). source (N, Z), target (M, Z).
    """
    for name, mu in (("source", source_mu), ("target", target_mu)):
        if mu.dim() != 2 or mu.size(0) == 0:
            raise ValueError(f"{name}_mu must be (N, Z) with N >= 1, got shape {tuple(mu.shape)}")
    if source_mu.size(1) != target_mu.size(1):
        raise ValueError(f"latent sizes differ: source {source_mu.size(1)}, target {target_mu.size(1)}")
    return target_mu.mean(dim=0) - source_mu.mean(dim=0)


def analogy_latent(z_a: torch.Tensor, z_b: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
    """`z_c + (z_b - z_a)`: "a is to b as c is to ?" (the word-vector analogy in latent space). Same shapes
    (Z,) or (N, Z); the difference comes first so that a == b gives z_c exactly."""
    if not z_a.shape == z_b.shape == z_c.shape:
        raise ValueError(f"shapes differ: {tuple(z_a.shape)}, {tuple(z_b.shape)}, {tuple(z_c.shape)}")
    return z_c + (z_b - z_a)


# ---------------------------------------------------------------- scores


@torch.no_grad()
def score_sentences(
    model, split: TokenizedSplit, iw_samples: int = 500, batch_size: int = 32, seed: int = 0
) -> list[dict]:
    """Per-sentence likelihood scores, in the split's order: a list of dicts (floats, nats).

    nll: importance-weighted `-log p(x)` with K = iw_samples (`evaluation.importance_weighted_nll`; exact
    for a language model); neg_elbo: rec (one `z ~ q(z | x)`) + kl; kl: closed form; tokens: words + EOS;
    nll_per_token. Batches are bucketed by length exactly as in `evaluation.evaluate` with the same seed
    streams, so the mean nll equals evaluate's nll for the same batch_size and seed.
    """
    if len(split) == 0:
        raise ValueError("no sentences to score")
    for name, value in (("iw_samples", iw_samples), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    device = next(model.parameters()).device
    generators = _generators(seed, device)
    options = {"iw_samples": iw_samples, "iw_chunk_size": 50, "compute_bleu": False, "max_length": 1}
    results: list[dict | None] = [None] * len(split)
    for number, indices in enumerate(LengthBucketSampler(split.lengths, batch_size, shuffle=False).batches()):
        batch = {k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()}
        scores = _score_batch(model, None, batch, options, batch_generators(generators, number))
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


# ---------------------------------------------------------------- probes


def draw_label_subsets(
    labels: Sequence, num_labels: Sequence[int | None], repeats: int = 5, seed: int = 0
) -> list[tuple[int | None, list[np.ndarray]]]:
    """For each N in `num_labels`, `repeats` index arrays of N labelled training examples.

    Each draw holds one example of every class (so a classifier can be fitted), the rest drawn uniformly
    without replacement; N = None takes every example, once. Draws depend only on (seed, N), so the latent
    and TF-IDF probes see the same examples.
    """
    labels = np.asarray(list(labels), dtype=object)
    classes = sorted({str(label) for label in labels})  # as the draws below compare them
    if len(classes) < 2:
        raise ValueError(f"probes need at least two classes in the training labels, got {classes}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    draws = []
    for count in num_labels:
        if count is None:
            draws.append((None, [np.arange(len(labels))]))
            continue
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"each number of labels must be a positive integer or None (all), got {count!r}")
        if count > len(labels):
            raise ValueError(f"asked for {count} labelled examples but only {len(labels)} exist")
        if count < len(classes):
            raise ValueError(
                f"{count} labelled examples cannot cover the {len(classes)} classes: ask for more"
            )
        rng = np.random.default_rng([seed, count])
        subsets = []
        for _ in range(repeats):
            order = rng.permutation(len(labels))
            _, first = np.unique(labels[order].astype(str), return_index=True)  # one of each class
            others = np.ones(len(order), dtype=bool)
            others[first] = False
            subsets.append(np.concatenate([order[first], order[others][: count - len(first)]]))
        draws.append((count, subsets))
    return draws


def _check_probe_data(train_x, train_labels, test_x, test_labels) -> None:
    if len(train_x) != len(train_labels):
        raise ValueError(f"{len(train_x)} training examples but {len(train_labels)} training labels")
    if len(test_x) != len(test_labels) or len(test_x) == 0:
        raise ValueError(
            f"need as many test labels as test examples (>= 1), got {len(test_x)}, {len(test_labels)}"
        )


def _fit_and_score(make_classifier, train_x, train_labels, test_x, test_labels, draws) -> list[dict]:
    """Fit one classifier per drawn subset; accuracy on the whole test set, averaged over the draws."""
    train_labels, test_labels = np.asarray(list(train_labels)), np.asarray(list(test_labels))
    results = []
    for count, subsets in draws:
        accuracies = []
        for indices in subsets:
            classifier = make_classifier().fit(train_x[indices], train_labels[indices])
            accuracies.append(float((classifier.predict(test_x) == test_labels).mean()))
        results.append(
            {
                "num_labels": count,
                "num_examples": len(subsets[0]),
                "accuracy": float(np.mean(accuracies)),
                "std": float(np.std(accuracies)),
                "accuracies": accuracies,
            }
        )
    return results


def probe_accuracy(
    train_features,
    train_labels: Sequence,
    test_features,
    test_labels: Sequence,
    num_labels: Sequence[int | None] = (100, 1000, None),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """Test accuracy of a logistic regression on (N, Z) features (e.g. `mu`) fitted on N labelled examples.

    The few-label linear probe of the latent space (as in Li et al. 2020, Optimus): an L2-regularised
    logistic regression on the raw features. They are not standardised: the latent's scale is meaningful
    (the prior is N(0, I)), and standardising would blow the near-constant means of inactive units
    (He et al. 2019) up to the size of the informative ones. Returns, per N in `num_labels` (None = all,
    once): num_labels, num_examples, accuracy (mean over `repeats` draws), std and the per-draw accuracies.
    """
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_features, dtype=np.float64)
    test_x = np.asarray(test_features, dtype=np.float64)
    _check_probe_data(train_x, train_labels, test_x, test_labels)
    draws = draw_label_subsets(train_labels, num_labels, repeats, seed)
    return _fit_and_score(
        lambda: LogisticRegression(max_iter=5000), train_x, train_labels, test_x, test_labels, draws
    )


def tfidf_probe_accuracy(
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
    num_labels: Sequence[int | None] = (100, 1000, None),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """The bag-of-words baseline of `probe_accuracy`: TF-IDF features, the same draws, the same outputs.

    The vocabulary and IDF weights come from all training texts, unlabelled, as the VAE itself was trained
    without labels; only the classifier sees just the N drawn labels. Single-letter words are kept.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    _check_probe_data(train_texts, train_labels, test_texts, test_labels)
    draws = draw_label_subsets(train_labels, num_labels, repeats, seed)
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(list(train_texts))
    return _fit_and_score(
        lambda: LogisticRegression(max_iter=5000),
        vectorizer.transform(list(train_texts)),
        train_labels,
        vectorizer.transform(list(test_texts)),
        test_labels,
        draws,
    )


def format_probe_table(results: dict[str, list[dict]]) -> str:
    """The probe results as a table: one row per number of labels, mean ± std over the draws."""

    def cell(result: dict) -> str:
        if len(result["accuracies"]) == 1:
            return f"{result['accuracy']:.3f}"
        return f"{result['accuracy']:.3f} ± {result['std']:.3f}"

    lines = [f"{'labels':<14}{'latent (mu)':<18}{'TF-IDF':<18}draws"]
    for latent, tfidf in zip(results["latent"], results["tfidf"], strict=True):
        count = latent["num_labels"]
        name = str(count) if count is not None else f"all ({latent['num_examples']})"
        lines.append(f"{name:<14}{cell(latent):<18}{cell(tfidf):<18}{len(latent['accuracies'])}")
    return "\n".join(lines)
