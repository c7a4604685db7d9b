"""Moving around the latent space: nearest neighbours, attribute vectors, analogies.

Everything here works on plain tensors (posterior means `mu`, (N, Z)) or on a pipeline, so it runs the same
from Python, the pipeline (`TextVAEPipeline.neighbours`, `transfer`, `analogy`) and the CLI. The corpus
cache lives in `cache.py` and the probes in `probes.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

METRICS = ("cosine", "l2")


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


def neighbour_rows(
    scores: torch.Tensor, indices: torch.Tensor, corpus_sentences: Sequence[str]
) -> list[list[dict]]:
    """`nearest_neighbours`' (Q, k) scores and indices as, per query, `{"sentence", "score", "index"}`."""
    return [
        [
            {"sentence": corpus_sentences[index], "score": score, "index": index}
            for score, index in zip(row_scores, row_indices, strict=True)
        ]
        for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True)
    ]


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


def transfer_vector(
    pipeline,
    source_sentences: Sequence[str] | None,
    target_sentences: Sequence[str] | None,
    vector: torch.Tensor | None,
) -> torch.Tensor:
    """The (Z,) float32 attribute vector of `pipeline.transfer`: `vector` itself, checked, or the
    `attribute_vector` of the two groups of sentences (one or the other, not both)."""
    if vector is None:
        if not source_sentences or not target_sentences:
            raise ValueError("give an attribute vector, or both source_sentences and target_sentences")
        vector = attribute_vector(pipeline.encode(source_sentences)[0], pipeline.encode(target_sentences)[0])
    elif source_sentences is not None or target_sentences is not None:
        raise ValueError("give either an attribute vector or source / target sentences, not both")
    vector = torch.as_tensor(vector, dtype=torch.float32)
    latent_dim = pipeline.model.config.latent_dim
    if vector.shape != (latent_dim,):
        raise ValueError(f"the attribute vector must have shape ({latent_dim},), got {tuple(vector.shape)}")
    return vector


def analogy_latent(z_a: torch.Tensor, z_b: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
    """`z_c + (z_b - z_a)`: "a is to b as c is to ?" (the word-vector analogy in latent space). Same shapes
    (Z,) or (N, Z); the difference comes first so that a == b gives z_c exactly."""
    if not z_a.shape == z_b.shape == z_c.shape:
        raise ValueError(f"shapes differ: {tuple(z_a.shape)}, {tuple(z_b.shape)}, {tuple(z_c.shape)}")
    return z_c + (z_b - z_a)
