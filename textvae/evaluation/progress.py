"""Scoring progress kept on disk, so a stopped evaluation resumes where it stopped (`ScoreProgress`).

The K = 500 importance-weighted NLL of a split is nearly all of an evaluation's time: about an hour for
PTB valid on a 2-core CPU. Every batch of `_score_split` draws its random numbers from generators seeded
by its batch number, so a batch scored before a stop gives exactly what it would give after one: its
scores are saved as they come (every `every_seconds`), and a later call with the same model, split and
options reads them back instead of scoring the batch again. The figures equal an uninterrupted run's bit
for bit (float64 values written as JSON, whose `repr` round-trips exactly).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..run_files import read_json, write_json

logger = logging.getLogger(__name__)


def model_digest(model: torch.nn.Module) -> str:
    """sha256 of the model's configuration and of every tensor of its state dict, in name order."""
    digest = hashlib.sha256(model.config.to_json_string().encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def prior_digest(prior) -> str:
    """sha256 of an `AggregatePrior`'s weights, means and covariances (float64) and covariance type."""
    digest = hashlib.sha256(prior.covariance_type.encode("utf-8"))
    for tensor in (prior.weights, prior.means, prior.covariances):
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def split_digest(split) -> str:
    """sha256 of a `TokenizedSplit`'s token ids and sentence boundaries (the encoder's too, if any)."""
    digest = hashlib.sha256()
    for packed in (split.input_ids, split.encoder_input_ids):
        if packed is not None:
            digest.update(np.ascontiguousarray(packed.values, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(packed.offsets, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


class ScoreProgress:
    """The scores of a split's batches, saved in `path` as they come and read back by a later run.

    key: what the scores depend on (model, split, options, seed); saved scores under another key are
    ignored and replaced. every_seconds: how often `add` writes the file (0: after every batch).
    """

    def __init__(self, path: str | Path, key: dict, every_seconds: float = 300.0):
        self.path, self.key, self.every_seconds = Path(path), key, every_seconds
        self.batches: dict[int, dict] = {}
        if self.path.is_file():
            try:
                saved = read_json(self.path)
            except ValueError as error:
                logger.warning("%s; scoring from the start", error)
            else:
                if isinstance(saved, dict) and saved.get("key") == key:
                    self.batches = {int(number): record for number, record in saved["batches"].items()}
                    logger.info("resuming the scoring: %d batches already scored in %s", len(self), self.path)
                else:
                    logger.info(
                        "%s holds another model's, split's or options' scores: scoring anew", self.path
                    )
        self._saved_at = time.monotonic()
        self._unsaved = 0

    @classmethod
    def for_scoring(
        cls, path: str | Path, model, split, options: dict, seed: int, every_seconds: float = 300.0
    ) -> ScoreProgress:
        """The progress file of scoring `split` with `model`: keyed by everything a batch's scores depend
        on (weights and config, token ids, the scoring options of `evaluate`, seed and device)."""
        names = ("iw_samples", "batch_size", "iw_chunk_size", "max_length", "compute_bleu")
        key = {
            "model": model_digest(model),
            "split": split_digest(split),
            "seed": seed,
            "device": str(next(model.parameters()).device),
            **{name: options[name] for name in names},
        }
        prior = options.get("aggregate_prior")
        if prior is not None:  # its NLL is scored too: saved scores count only for the same mixture
            key["aggregate_prior"] = prior_digest(prior)
        return cls(path, key, every_seconds)

    def __len__(self) -> int:
        return len(self.batches)

    def get(self, number: int, device: torch.device) -> tuple | None:
        """(sums (3,) float64, or (5,) with an aggregate prior (`_score_split`), mu, logvar (B, Z) float64 or
        None, hypotheses, references) of a scored batch."""
        record = self.batches.get(number)
        if record is None:
            return None

        def tensor(values):
            return None if values is None else torch.tensor(values, dtype=torch.float64, device=device)

        return (
            tensor(record["sums"]),
            tensor(record["mu"]),
            tensor(record["logvar"]),
            record["hypotheses"],
            record["references"],
        )

    def add(self, number: int, sums: torch.Tensor, mu, logvar, hypotheses: list, references: list) -> None:
        """Keep batch `number`'s scores; write the file when `every_seconds` have passed since the last."""
        self.batches[number] = {
            "sums": sums.tolist(),
            "mu": None if mu is None else mu.tolist(),
            "logvar": None if logvar is None else logvar.tolist(),
            "hypotheses": list(hypotheses),
            "references": list(references),
        }
        self._unsaved += 1
        if time.monotonic() - self._saved_at >= self.every_seconds:
            self.save()

    def save(self) -> None:
        """Write the scores so far (atomically: a stop never leaves half a file)."""
        if self._unsaved:
            write_json(self.path, {"key": self.key, "batches": {str(n): r for n, r in self.batches.items()}})
            self._unsaved = 0
        self._saved_at = time.monotonic()
