"""The latent cache of a corpus file: its posterior means, kept in the run folder while model and file stay.

Encoding a large corpus is the slow part of neighbours and probes; `encode_corpus_cached` stores the means
once as `latent-cache-<hash>.safetensors` (no pickle) and reuses them until the model's weights or the
file's bytes change. `corpus_latents` is what the pipeline calls: means given, cached, or encoded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..run_files import write_text_atomically

logger = logging.getLogger(__name__)

CACHE_PREFIX = "latent-cache-"
# Files whose bytes identify a trained model (see checkpointing.py).
_MODEL_FILES = ("model.safetensors", "config.json")


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


def corpus_latents(
    pipeline,
    sentences: Sequence[str],
    corpus_mu: torch.Tensor | None = None,
    corpus_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> torch.Tensor:
    """(N, Z) posterior means of `sentences`: `corpus_mu` when given (checked against N), else cached by
    `encode_corpus_cached` when the sentences come from the file `corpus_path`, else encoded."""
    if corpus_mu is not None:
        if corpus_mu.size(0) != len(sentences):
            raise ValueError(f"corpus_mu has {corpus_mu.size(0)} rows for {len(sentences)} sentences")
        return corpus_mu
    if corpus_path is not None:
        return encode_corpus_cached(pipeline, sentences, corpus_path, cache_dir, text_column, label_column)
    return pipeline.encode(sentences)[0]
