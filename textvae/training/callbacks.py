"""Sending training metrics to outside tools (`report_to`): TensorBoard event files in `<run>/tensorboard/`.

The run folder's `metrics.jsonl` stays the record; a reporter only mirrors its records as scalars.
"""

from __future__ import annotations

from pathlib import Path

from .config import REPORT_TO

TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = ("step", "epoch", "split")


def check_reporter_available(report_to: str) -> None:
    """ValueError naming the missing package, so a run fails at its start, not at its first log line."""
    if report_to == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (raises without tensorboard)
        except ImportError:
            raise ValueError(
                "report_to tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None


class TensorBoardReporter:
    """Mirror metric records as TensorBoard scalars `<split>/<name>` at their optimiser step.

    purge_step: on resume, the first step not covered by the checkpoint; TensorBoard drops the events a
    killed run wrote from there on, as the trainer drops those lines from metrics.jsonl.
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        check_reporter_available("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    def log(self, record: dict) -> None:
        """One metrics.jsonl record: each number becomes a scalar (lists such as kl_per_dim are skipped)."""
        split, step = record.get("split", "train"), record["step"]
        for name, value in record.items():
            if name not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{split}/{name}", value, global_step=step)
        if split != "train":  # once per epoch: the dashboard is at most an epoch behind
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_reporter(report_to: str, run_dir: str | Path, step: int = 0) -> TensorBoardReporter | None:
    """The reporter `report_to` names for a run at optimiser step `step`, or None for `none`."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "none":
        return None
    return TensorBoardReporter(run_dir, purge_step=step + 1 if step else None)
