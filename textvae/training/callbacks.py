"""What else sees a run's figures while it trains: callbacks the `Trainer` calls (transformers'
`TrainerCallback`, pythae's `training_callbacks.py`), wired by `run.train` from the config.

- `TensorBoardCallback` (`report_to: tensorboard`): each metrics record as TensorBoard scalars in
  `<run>/tensorboard/`. The run folder's `metrics.jsonl` stays the record; the callback only mirrors it.
- `PlotCallback` (`plot_each_epoch`): after each epoch, the run's figures redrawn (curves.png and the
  others, `plotting.write_training_plots`); it stops for good when matplotlib is missing.

Callbacks run on the main process only.
"""

from __future__ import annotations

from pathlib import Path

from .config import REPORT_TO

TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = ("step", "epoch", "split")


class TrainerCallback:
    """The hooks a `Trainer` calls; each does nothing unless a callback overrides it.

    on_train_begin(run_dir, step): training (re)starts at optimiser step `step`; on_log(record): a record
    was appended to metrics.jsonl; on_epoch_end(run_dir, record): an epoch's validation record;
    on_train_end(): training stopped, however it stopped.
    """

    def on_train_begin(self, run_dir: Path, step: int) -> None:
        pass

    def on_log(self, record: dict) -> None:
        pass

    def on_epoch_end(self, run_dir: Path, record: dict) -> None:
        pass

    def on_train_end(self) -> None:
        pass


def check_reporter_available(report_to: str) -> None:
    """ValueError naming the missing package, so a run fails at its start, not at its first log line."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (raises without tensorboard)
        except ImportError:
            raise ValueError(
                "report_to tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None


class TensorBoardCallback(TrainerCallback):
    """Mirror metric records as TensorBoard scalars `<split>/<name>` at their optimiser step.

    On a resumed run the writer purges the events from the first step the checkpoint does not cover:
    TensorBoard drops what a killed run wrote from there on, as the trainer drops those lines from
    metrics.jsonl.
    """

    def __init__(self):
        check_reporter_available("tensorboard")
        self.writer = None

    def on_train_begin(self, run_dir: Path, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge_step = step + 1 if step else None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    def on_log(self, record: dict) -> None:
        """Each number of a metrics.jsonl record becomes a scalar (lists such as kl_per_dim are skipped)."""
        split, step = record.get("split", "train"), record["step"]
        for name, value in record.items():
            if name not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{split}/{name}", value, global_step=step)
        if split != "train":  # once per epoch: the dashboard is at most an epoch behind
            self.writer.flush()

    def on_train_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class PlotCallback(TrainerCallback):
    """Redraw the run's figures after each epoch; off for good once matplotlib turns out to be missing."""

    def __init__(self):
        self.active = True

    def on_epoch_end(self, run_dir: Path, record: dict) -> None:
        if self.active:
            from ..plotting import write_training_plots

            self.active = write_training_plots(run_dir)


def make_callbacks(report_to: str = "none", plot_each_epoch: bool = True) -> list[TrainerCallback]:
    """The callbacks a config asks for (`report_to`, `plot_each_epoch`)."""
    check_reporter_available(report_to)
    callbacks: list[TrainerCallback] = [TensorBoardCallback()] if report_to == "tensorboard" else []
    if plot_each_epoch:
        callbacks.append(PlotCallback())
    return callbacks
