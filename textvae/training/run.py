"""Training a run from start to end: the run folder, the config and checkpoint to resume, the set-up on every
process, the `Trainer`'s loop, and the final aggregate prior.

`train(config)` starts a run in `output_dir`; `train(None, resume=RUN)` continues one from its last
`checkpoint-<step>/` and reaches the same weights as an uninterrupted run with the same seed.
Under torchrun every process calls `train` and trains the same model on its share of each global batch
(`distributed.py` says how); the weights after each step equal those of one process. The parts live in
`data.prepare` (the data), `setup.py` (model, optimiser), `trainer.py` (the epoch loop), `step.py` (one
step), `kl_weight.py`, `validation.py` and `callbacks.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path

import torch

from .. import checkpointing as ckpt
from .. import distributed
from ..data.config import split_flat_options
from ..data.storage import PreparedData
from ..run_files import (
    TRAIN_CONFIG_NAME,
    TRAINER_STATE_NAME,
    clear_run_folder,
    read_json,
    remove_stale_temporaries,
    run_lock,
)
from .callbacks import check_reporter_available, make_callbacks
from .config import TrainConfig
from .setup import build_model, check_model_options, prepare_run_data
from .trainer import Trainer

logger = logging.getLogger(__name__)


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to train into a folder holding other files; `overwrite` only replaces an earlier run, and only
    removes what textvae wrote there (refusing, before removing anything, if anything else is there)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(
            f"output folder {run_dir} is an existing file, not a folder: choose another --output-dir"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise ValueError(
                f"output folder {run_dir} is not empty: choose another --output-dir, continue it with --resume, or replace it with --overwrite"
            )
        clear_run_folder(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a parent that is a file, no permission, a full disk
        raise ValueError(f"cannot create the output folder {run_dir}: {error.strerror or error}") from None


def _checkpoints_to_resume(run_dir: Path) -> list[Path]:
    """The run's checkpoints, or `ValueError` saying what to do when there is none."""
    if not run_dir.is_dir():
        raise ValueError(f"nothing to resume: {run_dir} is not a run folder")
    checkpoints = ckpt.checkpoint_folders(run_dir)
    if not checkpoints:
        raise ValueError(
            f"nothing to resume in {run_dir}: no checkpoint-<step>/ folder (training stopped before its first "
            f"checkpoint); start it again with --overwrite, or train into a new --output-dir"
        )
    return checkpoints


def _resume_config(run_dir: Path, overrides: dict | None) -> tuple[TrainConfig, Path]:
    """The config of a run to resume (its saved options updated with `overrides`) and its last checkpoint;
    `ValueError` when there is nothing to resume or the run is complete. Reads files only."""
    checkpoints = _checkpoints_to_resume(run_dir)
    saved = read_json(run_dir / TRAIN_CONFIG_NAME)
    saved_data, saved_rest = split_flat_options(saved)
    override_data, override_rest = split_flat_options(overrides or {})
    config = TrainConfig.from_dict({**saved_rest, **override_rest, "data": {**saved_data, **override_data}})
    last = read_json(checkpoints[-1] / TRAINER_STATE_NAME)
    if last.get("finished") and (last["epoch"] >= config.epochs or config.epochs <= saved["epochs"]):
        how = (
            f"early stopping ended it after epoch {last['epoch']}"
            if last["epoch"] < saved["epochs"]
            else f"it trained {last['epoch']} epochs"
        )
        raise ValueError(
            f"run {run_dir} is complete ({how}); to train longer, resume it with --epochs N for an N above "
            f"{max(last['epoch'], saved['epochs'])}"
        )
    return config, checkpoints[-1]


def _prepare_data_everywhere(config: TrainConfig, tokenizer=None) -> PreparedData:
    """`prepare_run_data` on every process. A tokenizer still to be trained is trained by the main process
    alone and handed to the others: each training its own, BPE merges of equal counts could differ."""
    if tokenizer is not None or distributed.world_size() == 1:
        with distributed.shared_errors():
            return prepare_run_data(config, tokenizer)
    main, data = distributed.is_main_process(), None
    with distributed.shared_errors():
        if main:
            data = prepare_run_data(config)
    tokenizers = distributed.broadcast_object((data.tokenizer, data.encoder_tokenizer) if main else None)
    with distributed.shared_errors():
        if not main:
            data = prepare_run_data(config, *tokenizers)
    return data


def _set_up(config: TrainConfig, run_dir: Path, checkpoint: Path | None, overwrite: bool) -> Trainer:
    """The Trainer of a new run (`checkpoint` None) or of a resumed one, on every process.

    Only the main process writes the run folder; an error on any process stops all of them.
    """
    main = distributed.is_main_process()
    if checkpoint is not None:
        with distributed.shared_errors():
            if main:  # no writer is running: whatever is half-written was cut short
                remove_stale_temporaries(run_dir)
            model, tokenizer, encoder_tokenizer = ckpt.load_run(run_dir)
            data = prepare_run_data(config, tokenizer, encoder_tokenizer)
    else:
        with distributed.shared_errors():
            source, tokenizer = None, None
            if config.init_decoder_from is not None:
                source, tokenizer, _ = ckpt.load_run(config.init_decoder_from)
            check_model_options(config)  # before the corpus is read: a bad option is the only line
            if main:  # before touching the folder: bad data or a bad source must not cost a user's files
                check_reporter_available(config.report_to)
        data = _prepare_data_everywhere(config, tokenizer)
        with distributed.shared_errors():
            torch.manual_seed(config.seed)
            model = build_model(config, data.tokenizer)
            if source is not None:
                model.init_decoder_from(source)
                logger.info("decoder initialised from %s", config.init_decoder_from)
            if main:
                prepare_run_dir(run_dir, overwrite)
    with distributed.shared_errors():
        if main:  # max_steps and max_minutes stop this invocation; they are no hyperparameters: a resumed
            # run runs on (but a streaming run's schedule over the whole run takes max_steps as its length:
            # there it is kept)
            keep = config.data.streaming and config.schedule_needs_total_steps()
            saved = dataclasses.replace(config, max_minutes=None, **({} if keep else {"max_steps": None}))
            saved.save(run_dir / TRAIN_CONFIG_NAME)
        callbacks = make_callbacks(config.report_to, config.plot_each_epoch) if main else []
        trainer = Trainer(config, run_dir, model, data, callbacks)
        if checkpoint is not None:
            trainer.resume_from(checkpoint)
            # Finished means "reached the epochs asked for": a resume may ask for more.
            trainer.state["finished"] = trainer.state["epoch"] >= config.epochs
        elif main:
            ckpt.save_model(run_dir, model, data.tokenizer, data.encoder_tokenizer)
    return trainer


def train(
    config: TrainConfig | None,
    output_dir: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    overrides: dict | None = None,
) -> Path:
    """Train a text VAE into `output_dir`, or continue the run in `resume`; returns the run folder.

    On resume the saved training config is used, updated with `overrides` (for example more epochs).
    Under torchrun every process calls it (`textvae train` does): they join a process group
    (`distributed.setup_process_group`), the main process writes the run folder, and every process returns
    once it is complete. A checkpoint resumes on any number of processes.
    """
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        config, checkpoint = _resume_config(run_dir, overrides)
    elif config is None or output_dir is None:
        raise ValueError("give a training config and an output folder, or a run to resume")
    else:
        run_dir = Path(output_dir)
    distributed.setup_process_group(config.device)
    main = distributed.is_main_process()
    with contextlib.ExitStack() as lock:
        # One trainer per run folder: taken before a resume or --overwrite touches anything in a run folder
        # (any other folder is locked once it is accepted as one). The OS frees the lock however the
        # process ends.
        locked = main and (run_dir / TRAIN_CONFIG_NAME).is_file()
        with distributed.shared_errors():
            if locked:
                lock.enter_context(run_lock(run_dir))
        trainer = _set_up(config, run_dir, checkpoint, overwrite)
        if main and not locked:
            lock.enter_context(run_lock(run_dir))
        trainer.train()
        has_latent = trainer.model.config.has_latent
        if config.fit_prior and has_latent and trainer.state["finished"] and trainer.is_main:
            fit_final_prior(run_dir, trainer.data, trainer.device, config.seed)
    distributed.barrier()  # the others wait for the run folder to be complete
    return run_dir


def fit_final_prior(run_dir: Path, data: PreparedData, device, seed: int) -> None:
    """Fit the aggregate-posterior prior of the run's best model (`sample --prior aggregate`) and save it."""
    from ..priors.fitting import fit_prior

    started = time.monotonic()
    best = ckpt.load_model(run_dir, device)
    prior = fit_prior(best, data.train, data.validation, seed=seed)
    prior.save(run_dir)
    logger.info(
        "aggregate prior fitted: %d components (%.0f s); sample from it with --prior aggregate",
        prior.n_components,
        time.monotonic() - started,
    )
