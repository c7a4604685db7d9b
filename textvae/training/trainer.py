"""The epoch loop of one run folder: epochs of steps, checkpoints on schedule, validation, best model,
early stopping, autoencoder pretraining, and resuming from a checkpoint.

The step itself (the global batch's share, loss, backward, update) is a `step.TrainStep` the trainer
calls (an `aggressive.AggressiveTrainStep` with `aggressive_encoder`); the KL weight is one object of
`kl_weight.py`; logging beyond metrics.jsonl and the per-epoch figures are callbacks (`callbacks.py`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import checkpointing as ckpt
from .. import distributed
from ..data.bucketing import LengthBucketSampler
from ..data.storage import PreparedData
from ..distributed import derived_seed
from ..models.modeling import TextVAEModel
from ..run_files import (
    HISTORY_NAME,
    METRICS_NAME,
    TRAINER_STATE_NAME,
    append_record,
    read_json,
    read_records,
    rewrite_records,
    write_json,
)
from .aggressive import AggressiveTrainStep, random_batch_drawer
from .callbacks import TrainerCallback
from .config import TrainConfig
from .kl_weight import KLController, make_kl_weight
from .setup import make_optimizer, make_scheduler
from .step import DECODER_RESET, NonFiniteError, TrainStep
from .validation import validate

logger = logging.getLogger(__name__)
_clock = time.monotonic  # epoch wall time; a test may replace it
_UNKNOWN_STEPS = 2**62  # the step pretraining ends at, while a streaming run's first epochs run
# Train figures logged as means over the log interval (`Trainer._sum_for_log`).
_AVERAGED_FIGURES = ("loss", "rec", "kl", "bow")


class Trainer:
    """Runs the loop for one run folder; all state needed to resume is in its checkpoints.

    In a process group (torchrun), every process runs a Trainer: each step, each takes its contiguous share
    of the global batch of `config.batch_size` sentences (the same on all, from the seeded sampler), and
    the loss is that of the whole global batch (`TrainStep.global_batch_loss`). Only the main process
    writes files and runs the callbacks.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        model: TextVAEModel,
        data: PreparedData,
        callbacks: list[TrainerCallback] | None = None,
    ):
        self.config, self.run_dir, self.model, self.data = config, run_dir, model, data
        self.device = distributed.process_device(config.device)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        if config.batch_size < self.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is the global batch, shared by {self.world_size} processes: "
                f"it must hold at least one sentence per process"
            )
        self.model.to(self.device)
        self.stream = data.stream  # with --streaming: the training split, read pool by pool
        if self.stream is None:
            self.sampler = LengthBucketSampler(data.train.lengths, config.batch_size, seed=config.seed)
            self.steps_per_epoch = self.sampler.num_batches
            self.pretrain_steps = self.steps_per_epoch * config.pretrain_epochs
            self.total_steps = self.steps_per_epoch * config.epochs
        else:  # the steps of an epoch are known once its first pass ends
            self.sampler, self.steps_per_epoch = None, None
            # Pretraining ends with an epoch, at a step known then (state["pretrain_steps"]).
            self.pretrain_steps = _UNKNOWN_STEPS if config.pretrain_epochs else 0
            # Schedules over the whole run take --max-steps as its length (TrainConfig checks it is given).
            self.total_steps = config.max_steps or 0
        if config.pretrain_epochs and model.config.decoder_type == "hf":
            raise ValueError("pretrain_epochs re-initialises the decoder: not for a pretrained (hf) decoder")
        self.optimizer = make_optimizer(config, model)
        self.kl_weight = make_kl_weight(
            config, self.total_steps - self.pretrain_steps, model.config.has_posterior
        )
        self._warned_out_of_reach = False
        self.scheduler = make_scheduler(config, self.optimizer, self.total_steps)
        self.state = {
            "step": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "best_neg_elbo": None,
            "epochs_without_improvement": 0,
            "history": [],
            "finished": False,
            "epoch_seconds": 0.0,  # time spent in the current epoch up to its last mid-epoch checkpoint
        }
        self.step = self._make_step()
        self._start_aggressive_phase()
        self._epoch_started = 0.0
        self._last_save = None  # clock reading of the last checkpoint, for save_minutes
        self.callbacks = list(callbacks or []) if self.is_main else []

    def _make_step(self) -> TrainStep:
        """The step: He et al.'s aggressive one with `aggressive_encoder` (its batches drawn from the
        sampler's epoch), else the plain one."""
        config, options = (
            self.config,
            {"device": self.device, "rank": self.rank, "world_size": self.world_size},
        )
        options["encoder_tokenizer"] = self.data.encoder_tokenizer
        if not config.aggressive_encoder:
            return TrainStep(self.model, self.optimizer, config, **options)
        draw = random_batch_drawer(self.sampler, self.data.train, config.seed)
        return AggressiveTrainStep(
            self.model,
            self.optimizer,
            config,
            random_batch=draw,
            max_updates=config.aggressive_max_steps,
            **options,
        )

    def _start_aggressive_phase(self) -> None:
        """The aggressive phase in the state (kept in checkpoints), when the step is aggressive."""
        if isinstance(self.step, AggressiveTrainStep):
            self.state.setdefault("aggressive", True)
            self.state.setdefault("aggressive_previous_mi", 0.0)  # He et al.'s pre_mi = 0

    def _aggressive_now(self) -> bool:
        """Whether this step is aggressive: the option is on, the phase has not ended, and the VAE trains."""
        return (
            isinstance(self.step, AggressiveTrainStep)
            and self.state["aggressive"]
            and self.state["step"] >= self.pretrain_steps
        )

    def _kl_weight(self) -> float:
        """0 while the autoencoder is pretrained; then the KL weight's, counted from the VAE's first step."""
        step = self.state["step"] - self.pretrain_steps
        return 0.0 if step < 0 else self.kl_weight.weight(step)

    def _diverged(self, what: str, value: float) -> ValueError:
        """The error that stops a run whose loss or gradients stopped being finite numbers.

        Nothing is saved from that point on, so the best model and the checkpoints stay finite.
        """
        return ValueError(
            f"training stopped at step {self.state['step'] + 1} (epoch {self.state['epoch'] + 1}): the "
            f"{what} became {value}; the best model and the last checkpoint in {self.run_dir} are from before "
            f"it. Lower --learning-rate, keep --max-grad-norm on, or check the data"
        )

    def _step(self, split, indices) -> dict:
        """One step on a global batch of `split`, the KL weight fed the batch's KL afterwards; its figures."""
        config, step = self.config, self.state["step"]
        pretraining = step < self.pretrain_steps
        options = {
            "step": step,
            "kl_weight": self._kl_weight(),
            "free_bits": 0.0 if pretraining else config.free_bits,
        }
        if isinstance(self.step, AggressiveTrainStep):
            options["aggressive"] = self._aggressive_now()
        try:
            metrics = self.step(split, indices, **options)
        except NonFiniteError as error:
            raise self._diverged(error.what, error.value) from None
        if config.lr_scheduler == "cosine":
            self.scheduler.step()
        if not pretraining:
            metrics.update(self.kl_weight.figures())  # the weight this step used, and a controller's target
            self.kl_weight.update(metrics["kl"])  # the controller's weight of the next step
        return metrics

    def resume_from(self, checkpoint: Path) -> None:
        if 0 < self.config.pretrain_epochs <= read_json(checkpoint / TRAINER_STATE_NAME)["epoch"]:
            self._start_vae_phase(reset_decoder=False)  # the checkpoint's optimiser state is the VAE phase's
        self.state, extra = ckpt.load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
        if self.stream is not None and "pretrain_steps" in self.state:
            self.pretrain_steps = self.state["pretrain_steps"]
        if isinstance(self.kl_weight, KLController):
            state = (extra or {}).get("controller")
            if not state:
                raise ValueError(
                    f"checkpoint {checkpoint} has no KL controller state: it does not fit this run"
                )
            self.kl_weight.load_state_dict(state)
        self._start_aggressive_phase()  # a checkpoint from before --aggressive-encoder was given starts it
        metrics = self.run_dir / METRICS_NAME
        # Drop lines written after the checkpoint: they will be written again.
        if self.is_main and metrics.is_file():
            records = read_records(metrics)
            rewrite_records(metrics, [r for r in records if r.get("step", 0) <= self.state["step"]])
        logger.info(
            "resumed from %s (step %d, epoch %d)",
            checkpoint.name,
            self.state["step"],
            self.state["epoch"] + 1,
        )

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        append_record(self.run_dir / METRICS_NAME, record)
        for callback in self.callbacks:
            callback.on_log(record)

    def _start_vae_phase(self, reset_decoder: bool = True) -> None:
        """End of autoencoder pretraining (Li et al. 2019): new decoder, optimiser and best-model record."""
        if reset_decoder:
            # Seeded by the step alone: every process draws the same new decoder, resumed or not.
            torch.manual_seed(derived_seed(self.config.seed, self.state["step"], DECODER_RESET))
            decoder = self.model.decoder
            if hasattr(decoder, "reset_parameters"):  # a decoder that knows its own initialisation
                decoder.reset_parameters()
            else:
                for module in decoder.modules():
                    if module is not decoder and hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                for name, parameter in decoder.named_parameters(recurse=False):
                    if name.endswith("bias"):
                        torch.nn.init.zeros_(parameter)
            logger.info("autoencoder pretraining done: decoder re-initialised, VAE training starts")
        self.optimizer = self.step.optimizer = make_optimizer(self.config, self.model)
        self.scheduler = make_scheduler(self.config, self.optimizer, self.total_steps - self.pretrain_steps)
        # A schedule over the VAE's steps, which a stream knows only now; a controller fed no KL so far.
        vae_steps = self.total_steps - self.pretrain_steps
        self.kl_weight = make_kl_weight(self.config, vae_steps, self.model.config.has_posterior)

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; False when max_steps or max_minutes stopped it early."""
        config, state = self.config, self.state
        self.model.train()
        batches, total = self._epoch_batches()
        bar = tqdm(
            batches,
            total=total,
            desc=f"epoch {state['epoch'] + 1}/{config.epochs}",
            disable=not config.progress or not self.is_main,
            leave=False,
        )
        for split, indices in bar:
            metrics = self._step(split, indices)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            bar.set_postfix(
                loss=f"{metrics['loss']:.2f}",
                kl=f"{metrics['kl']:.2f}"
                + (f"/{metrics['kl_target']:.1f}" if "kl_target" in metrics else ""),
                beta=f"{metrics['kl_weight']:.3f}",
                refresh=False,  # shown at the bar's own pace: a log file gets no line per step
            )
            averaged = self._sum_for_log(metrics)
            if state["step"] % config.log_steps == 0:
                self._log(
                    {
                        "step": state["step"],
                        "epoch": state["epoch"] + 1,
                        "split": "train",
                        "lr": self.optimizer.param_groups[0]["lr"],
                        **metrics,
                        **averaged,
                    }
                )
                state["log_sums"] = {}
            if config.max_steps is not None and state["step"] >= config.max_steps:
                self._checkpoint()
                return False
            if self._out_of_time():
                self._checkpoint()
                logger.info(self._out_of_time_message())
                return False
            if (config.save_steps and state["step"] % config.save_steps == 0) or (
                config.save_minutes and _clock() - self._last_save >= 60 * config.save_minutes
            ):
                self._checkpoint()
        return True

    def _out_of_time(self) -> bool:
        """Whether --max-minutes of this invocation's training have passed."""
        minutes = self.config.max_minutes
        if minutes is None:
            return False
        late = _clock() - self._started >= 60 * minutes
        # The main process's clock decides, so that every process stops after the same step.
        return bool(distributed.broadcast_object(late)) if distributed.is_distributed() else late

    def _out_of_time_message(self) -> str:
        return (
            f"--max-minutes {self.config.max_minutes:g} reached at step {self.state['step']} (epoch "
            f"{self.state['epoch'] + 1}): a checkpoint is written; continue with textvae train --resume "
            f"{self.run_dir}"
        )

    def _epoch_batches(self) -> tuple:
        """((split, global batch indices) for the rest of the current epoch, their number or None)."""
        state = self.state
        if self.stream is None:
            self.sampler.set_epoch(state["epoch"], state["batch_in_epoch"])
            return ((self.data.train, indices) for indices in self.sampler), len(self.sampler)
        known = state.get("stream_epoch_steps")  # the first epoch's: later ones hold about as many
        return self._stream_batches(), known - state["batch_in_epoch"] if known else None

    def _stream_batches(self):
        """The stream's batches from the checkpointed position; each sets the position after it, which the
        checkpoint after its step records."""
        state = self.state
        position = tuple(state.get("stream_position", (0, 0)))
        for split, indices, after in self.stream.batches(state["epoch"], position):
            state["stream_position"] = list(after)
            yield split, indices
        if state["batch_in_epoch"] == 0:
            raise ValueError(
                f"epoch {state['epoch'] + 1} read no training batch from the stream of {self.config.data.source}: "
                f"it is empty, or --overlong drop dropped every sentence"
            )

    def _end_epoch(self, seconds: float) -> bool:
        """Validate, keep the best model, step the plateau scheduler; True when early stopping fires."""
        config, state = self.config, self.state
        metrics = self._validate(seconds)
        self._warn_if_target_out_of_reach(metrics["kl"])
        if self._aggressive_now() and state["epoch"] >= config.pretrain_epochs:
            AggressiveTrainStep.end_epoch(state, metrics["mi"])
        save = self._is_best(metrics["neg_elbo"])
        if self.is_main:
            if save:
                ckpt.save_model(self.run_dir, self.model, self.data.tokenizer, self.data.encoder_tokenizer)
            write_json(self.run_dir / HISTORY_NAME, state["history"])
        for callback in self.callbacks:
            callback.on_epoch_end(self.run_dir, state["history"][-1])
        if config.lr_scheduler == "plateau" and self._target_reached():
            self.scheduler.step(metrics["neg_elbo"])
        if self.stream is not None:
            state.setdefault("stream_epoch_steps", state["batch_in_epoch"])
            state["stream_position"] = [0, 0]
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["epoch_seconds"] = 0.0
        if config.pretrain_epochs and state["epoch"] == config.pretrain_epochs:
            if self.stream is not None:
                self.pretrain_steps = state["pretrain_steps"] = state["step"]
            self._start_vae_phase()
            state["best_neg_elbo"], state["epochs_without_improvement"] = None, 0
        patience = config.early_stopping_patience
        return bool(patience) and state["epochs_without_improvement"] >= patience

    def _warn_if_target_out_of_reach(self, valid_kl: float) -> None:
        """Once a run: the KL stays above its target with the weight at its bound, so the target cannot be
        met (at weight 1, the bag-of-words loss and free bits keep more than a low target in z)."""
        controller = self.kl_weight
        if self._warned_out_of_reach or not self.is_main:
            return
        if controller.out_of_reach(valid_kl):
            self._warned_out_of_reach = True
            logger.warning(
                "valid KL %.2f stays above --target-kl %g with the KL weight at its bound --beta %g: this "
                "model keeps more than the target in z at that weight (the bag-of-words loss and free bits "
                "push the KL up); allow a larger weight with --beta, or lower --bag-of-words-loss",
                valid_kl,
                controller.target,
                controller.beta_max,
            )

    def _validate(self, seconds: float) -> dict:
        """The epoch's validation figures, recorded in the history and the metrics log."""
        config, state = self.config, self.state
        metrics = validate(
            self.model,
            self.data.validation,
            config.batch_size,
            seed=config.seed,
            shard=self.world_size > 1,
            mutual_info=self._aggressive_now(),
        )
        for name in ("rec", "kl"):
            if not math.isfinite(metrics[name]):
                raise self._diverged(f"validation {name}", metrics[name])
        record = {
            "step": state["step"],
            "epoch": state["epoch"] + 1,
            "split": "validation",
            "seconds": round(seconds, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            **metrics,
        }
        record.update(self.kl_weight.figures())
        state["history"].append(record)
        self._log(record)
        logger.info(
            "epoch %d: valid rec %.2f  kl %.2f  -elbo %.2f  ppl<=%.1f  au %s",
            record["epoch"],
            metrics["rec"],
            metrics["kl"],
            metrics["neg_elbo"],
            metrics["ppl_bound"],
            metrics.get("au", "-"),
        )
        return metrics

    def _is_best(self, neg_elbo: float) -> bool:
        """Whether this epoch's model is kept as the best one; counts the epochs without improvement."""
        state = self.state
        if not self._target_reached():
            # While the KL still rises to its target, -ELBO rises with it by design: each epoch's model is
            # kept, and the best-model record (and early stopping) start once the target is reached.
            return True
        if state["best_neg_elbo"] is None or neg_elbo < state["best_neg_elbo"]:
            state["best_neg_elbo"] = neg_elbo
            state["epochs_without_improvement"] = 0
            return True
        state["epochs_without_improvement"] += 1
        return False

    def _target_reached(self) -> bool:
        """False while a KL target is still to be reached (warming up, or the KL still rising to it)."""
        return self.kl_weight.reached

    def _sum_for_log(self, metrics: dict) -> dict:
        """Add a step's figures to the sums since the last logged step; return their per-sentence means.

        The logged rec, KL, loss (and bag-of-words loss) are means over every sentence since the last log,
        as transformers logs its loss: one length-bucketed batch alone swings from a few nats (a batch of
        short sentences) to hundreds. The sums live in the trainer state, so a resumed run logs what an
        uninterrupted one does. The KL weight, target and learning rate are the step's own.
        """
        sums = self.state.setdefault("log_sums", {})
        size = self.step.global_batch_size
        sums["sentences"] = sums.get("sentences", 0) + size
        for key in _AVERAGED_FIGURES:
            if key in metrics:
                sums[key] = sums.get(key, 0.0) + metrics[key] * size
        return {key: sums[key] / sums["sentences"] for key in _AVERAGED_FIGURES if key in sums}

    def _checkpoint(self) -> None:
        self._last_save = now = _clock()
        if not self.is_main:  # the state is the same on every process: the main one saves it
            return
        if self.state["batch_in_epoch"]:
            self.state["epoch_seconds"] = now - self._epoch_started
        extra = (
            {"controller": self.kl_weight.state_dict()} if isinstance(self.kl_weight, KLController) else None
        )
        if self.state["best_neg_elbo"] is None:
            # No validated model yet (the first epoch, or --max-steps before its end): the run folder's
            # model is the latest weights, so that sampling from a run in progress is never from noise.
            ckpt.save_model(self.run_dir, self.model)
        ckpt.save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            self.state,
            self.config.keep_checkpoints,
            extra,
        )

    def train(self) -> list[dict]:
        """Train to the last epoch, early stop, max_steps or max_minutes; return the validation history."""
        self.step.forward_model = distributed.wrap_model(self.model, self.device)
        if self.model.mean_norm is not None:  # BN-VAE's statistics over the global batch
            self.model.mean_norm.synchronize = distributed.is_distributed()
        if self.world_size > 1:
            logger.info(
                "%d processes share each global batch of %d sentences (%.1f each)",
                self.world_size,
                self.config.batch_size,
                self.config.batch_size / self.world_size,
            )
        for callback in self.callbacks:  # after a resume has set the step
            callback.on_train_begin(self.run_dir, self.state["step"])
        try:
            return self._train()
        finally:
            self.step.forward_model = self.model
            if self.model.mean_norm is not None:
                self.model.mean_norm.synchronize = False
            for callback in self.callbacks:
                callback.on_train_end()

    def _train(self) -> list[dict]:
        state = self.state
        self._started = _clock()
        while state["epoch"] < self.config.epochs and not state["finished"]:
            # A resumed epoch counts the time it ran before the checkpoint it resumed from.
            now = _clock()
            self._epoch_started = now - state.get("epoch_seconds", 0.0)
            if self._last_save is None:
                self._last_save = now
            if not self._run_epoch():
                return state["history"]
            if self._end_epoch(_clock() - self._epoch_started):
                logger.info(
                    "early stopping: no better valid -ELBO for %d epochs", self.config.early_stopping_patience
                )
                state["finished"] = True
            state["finished"] = state["finished"] or state["epoch"] >= self.config.epochs
            self._checkpoint()
            if not state["finished"] and self._out_of_time():
                logger.info(self._out_of_time_message())
                return state["history"]
        return state["history"]
