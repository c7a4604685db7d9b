"""The epoch loop of one run folder: epochs of steps, checkpoints on schedule, validation, best model,
early stopping, autoencoder pretraining, and resuming from a checkpoint.

The step itself (the global batch's share, loss, backward, update) is `training_step.TrainingStepMixin`.
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
from ..plotting import write_training_plots
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
from .aggressive import AggressiveTrainingMixin
from .callbacks import make_reporter
from .config import TrainConfig
from .kl_weight import KLController
from .setup import make_optimizer, make_scheduler
from .step import DECODER_RESET, TrainingStepMixin
from .validation import validate

logger = logging.getLogger(__name__)
_clock = time.monotonic  # epoch wall time; a test may replace it
_UNKNOWN_STEPS = 2**62  # the step pretraining ends at, while a streaming run's first epochs run
# Train figures logged as means over the log interval (`Trainer._sum_for_log`).
_AVERAGED_FIGURES = ("loss", "rec", "kl", "bow")


class Trainer(AggressiveTrainingMixin, TrainingStepMixin):
    """Runs the loop for one run folder; all state needed to resume is in its checkpoints.

    In a process group (torchrun), every process runs a Trainer: each step, each takes its contiguous share
    of the global batch of `config.batch_size` sentences (the same on all, from the seeded sampler), and
    the loss is that of the whole global batch (`_global_batch_loss`). Only the main process writes files.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, model: TextVAEModel, data: PreparedData):
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
        self.forward_model = model  # under DistributedDataParallel once train() starts
        self._generator = torch.Generator(device=self.device)  # the step's draws, reseeded every step
        self._global_batch_size, self._shard_weight = config.batch_size, 1.0  # set for each step
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
        self.encoder_noise = config.noise()  # Shen et al.'s denoising input, in `_shard_batch`
        self.controller, self._warned_out_of_reach = None, False
        if config.target_kl is not None and model.config.has_posterior:
            self.controller = KLController(
                target=config.target_kl,
                warmup_steps=config.target_kl_warmup_steps,
                kp=config.kl_controller_kp,
                ki=config.kl_controller_ki,
                beta_max=config.beta,
            )
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
        self._setup_aggressive()  # He et al. 2019's aggressive encoder updates, when config.aggressive_encoder
        self._epoch_started = 0.0
        self._last_save = None  # clock reading of the last checkpoint, for save_minutes
        self.reporter = None  # opened by train(), after a resume has set the step
        self.plot_each_epoch = config.plot_each_epoch
        encoder_tokenizer = data.encoder_tokenizer
        self.encoder_pad_id = encoder_tokenizer.pad_token_id if encoder_tokenizer is not None else 0

    def resume_from(self, checkpoint: Path) -> None:
        if 0 < self.config.pretrain_epochs <= read_json(checkpoint / TRAINER_STATE_NAME)["epoch"]:
            self._start_vae_phase(reset_decoder=False)  # the checkpoint's optimiser state is the VAE phase's
        self.state, extra = ckpt.load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
        if self.stream is not None and "pretrain_steps" in self.state:
            self.pretrain_steps = self.state["pretrain_steps"]
        if self.controller is not None:
            if not (extra or {}).get("controller"):
                raise ValueError(
                    f"checkpoint {checkpoint} has no KL controller state: it does not fit this run"
                )
            self.controller.load_state_dict(extra["controller"])
        self._setup_aggressive()  # a checkpoint from before --aggressive-encoder was given starts its phase
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
        if self.reporter is not None:
            self.reporter.log(record)

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
        self.optimizer = make_optimizer(self.config, self.model)
        self.scheduler = make_scheduler(self.config, self.optimizer, self.total_steps - self.pretrain_steps)

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
            metrics = self._step(indices, split)
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
        self._end_aggressive_epoch(metrics)
        save = self._is_best(metrics["neg_elbo"])
        if self.is_main:
            if save:
                ckpt.save_model(self.run_dir, self.model, self.data.tokenizer, self.data.encoder_tokenizer)
            write_json(self.run_dir / HISTORY_NAME, state["history"])
        if self.plot_each_epoch and self.is_main:  # False from now on when matplotlib is missing
            self.plot_each_epoch = write_training_plots(self.run_dir)
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
        controller = self.controller
        if controller is None or self._warned_out_of_reach or not self.is_main:
            return
        settled = controller.step >= controller.warmup_steps
        if settled and controller.beta >= controller.beta_max and valid_kl > 1.1 * controller.target:
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
        if self.controller is not None:
            record.update(kl_weight=self.controller.beta, kl_target=self.controller.current_target())
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
        return self.controller is None or self.controller.reached

    def _sum_for_log(self, metrics: dict) -> dict:
        """Add a step's figures to the sums since the last logged step; return their per-sentence means.

        The logged rec, KL, loss (and bag-of-words loss) are means over every sentence since the last log,
        as transformers logs its loss: one length-bucketed batch alone swings from a few nats (a batch of
        short sentences) to hundreds. The sums live in the trainer state, so a resumed run logs what an
        uninterrupted one does. The KL weight, target and learning rate are the step's own.
        """
        sums = self.state.setdefault("log_sums", {})
        size = self._global_batch_size
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
        extra = {"controller": self.controller.state_dict()} if self.controller is not None else None
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
        self.forward_model = distributed.wrap_model(self.model, self.device)
        if self.model.mean_norm is not None:  # BN-VAE's statistics over the global batch
            self.model.mean_norm.synchronize = distributed.is_distributed()
        if self.world_size > 1:
            logger.info(
                "%d processes share each global batch of %d sentences (%.1f each)",
                self.world_size,
                self.config.batch_size,
                self.config.batch_size / self.world_size,
            )
        if self.is_main:
            self.reporter = make_reporter(self.config.report_to, self.run_dir, self.state["step"])
        try:
            return self._train()
        finally:
            self.forward_model = self.model
            if self.model.mean_norm is not None:
                self.model.mean_norm.synchronize = False
            if self.reporter is not None:
                self.reporter.close()

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
