"""The training loop: data, model, optimiser, KL schedule, validation, best model, early stopping, resume.

`train(config)` starts a run in `output_dir`; `train(None, resume=RUN)` continues one from its last
`checkpoint-<step>/` and reaches the same weights as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpointing as ckpt
from .configuration import TextVAEConfig
from .data import LengthBucketSampler, TokenizedSplit, collate, load_corpus, tokenize_corpus
from .modeling import TextVAEModel, gaussian_kl
from .plotting import write_training_plots
from .rate_control import KLController
from .reporting import check_reporter_available, make_reporter
from .run_files import (
    append_record,
    clear_run_folder,
    read_records,
    remove_stale_temporaries,
    rewrite_records,
)
from .tokenization import train_tokenizer
from .training_config import TrainConfig, kl_weight

logger = logging.getLogger(__name__)
_clock = time.monotonic  # epoch wall time; a test may replace it


@dataclass
class PreparedData:
    """Tokenized splits and the tokenizer(s) a run trains with."""

    tokenizer: object
    encoder_tokenizer: object | None
    train: TokenizedSplit
    validation: TokenizedSplit


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; a requested cuda device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def prepare_data(config: TrainConfig, tokenizer=None, encoder_tokenizer=None) -> PreparedData:
    """Load and tokenize the corpus; train the tokenizer on the training split unless one is given."""
    corpus = load_corpus(config.data, data_dir=config.data_dir, **config.corpus_options())
    model_options = config.model
    if tokenizer is None and model_options.get("decoder_type") == "hf":
        from .backbones import load_backbone_tokenizer

        tokenizer = load_backbone_tokenizer(model_options.get("decoder_name_or_path"))
    if encoder_tokenizer is None and model_options.get("encoder_type") == "hf":
        from .backbones import load_backbone_tokenizer

        encoder_tokenizer = load_backbone_tokenizer(model_options.get("encoder_name_or_path"))
    if tokenizer is None:
        tokenizer = train_tokenizer(
            corpus["train"]["text"], config.tokenizer_type, config.min_frequency, config.max_vocab_size
        )
    tokenized = tokenize_corpus(corpus, tokenizer, encoder_tokenizer, config.max_length, config.overlong)
    return PreparedData(
        tokenizer=tokenizer,
        encoder_tokenizer=encoder_tokenizer,
        train=TokenizedSplit.from_dataset(tokenized["train"]),
        validation=TokenizedSplit.from_dataset(tokenized["validation"]),
    )


def build_model(config: TrainConfig, tokenizer) -> TextVAEModel:
    """A fresh model: `config.model` options, vocabulary and special ids from the tokenizer."""
    options = dict(config.model)
    unknown = sorted(set(options) - set(TextVAEConfig().to_dict()))
    if unknown:
        raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
    if config.word_dropout > 0 and tokenizer.unk_token_id in (None, tokenizer.eos_token_id):
        raise ValueError("word_dropout needs an unk token distinct from EOS, and this tokenizer has none")
    options.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        unk_token_id=tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id,
    )
    if "hf" in (options.get("encoder_type"), options.get("decoder_type")):
        from .backbones import backbone_config_overrides, load_pretrained_backbones

        options.update(backbone_config_overrides(options))
        model = TextVAEModel(TextVAEConfig(**options))
        load_pretrained_backbones(model)
        return model
    return TextVAEModel(TextVAEConfig(**options))


def make_optimizer(config: TrainConfig, model: TextVAEModel) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates every parameter in one pass: on a CPU the Adam step takes a third of the time.
    return optimizer_class(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )


def make_scheduler(config: TrainConfig, optimizer, total_steps: int):
    """plateau steps once per epoch on valid -ELBO; cosine steps once per optimiser step."""
    if config.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_decay, patience=config.lr_patience
        )
    if config.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return None


@torch.no_grad()
def validate(model: TextVAEModel, split: TokenizedSplit, batch_size: int, seed: int = 0) -> dict:
    """rec, KL, -ELBO (weight 1) per sentence, the PPL bound, active units and the (Z,) KL per dimension.

    z is drawn with its own generator, so validation neither depends on nor moves the training RNG.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sampler = LengthBucketSampler(split.lengths, batch_size, shuffle=False)
    rec_total = kl_total = 0.0
    means, kl_per_dim = [], 0.0
    for indices in sampler:
        batch = {k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()}
        z = None
        if model.config.has_latent:
            mu, logvar = model.encode(
                batch.get("encoder_input_ids", batch["input_ids"]),
                batch.get("encoder_attention_mask", batch["attention_mask"]),
            )
            z = model.reparameterize(mu, logvar, generator)
            kl = gaussian_kl(mu, logvar)  # (B, Z)
            kl_total += float(kl.sum())
            kl_per_dim = kl_per_dim + kl.double().sum(dim=0)  # (Z,)
            means.append(mu.float().cpu())
        rec, _ = model.reconstruction_loss(batch["input_ids"], batch["attention_mask"], z)
        rec_total += float(rec.sum())
    count, tokens = len(split), split.num_target_tokens()
    metrics = {"rec": rec_total / count, "kl": kl_total / count}
    metrics["neg_elbo"] = metrics["rec"] + metrics["kl"]
    metrics["ppl_bound"] = math.exp((rec_total + kl_total) / tokens)
    if means:
        metrics["au"] = int((torch.cat(means).var(dim=0) >= 0.01).sum())
        metrics["kl_per_dim"] = (kl_per_dim / count).tolist()  # which dimensions carry the KL
    return metrics


class Trainer:
    """Runs the loop for one run folder; all state needed to resume is in its checkpoints."""

    def __init__(self, config: TrainConfig, run_dir: Path, model: TextVAEModel, data: PreparedData):
        self.config, self.run_dir, self.model, self.data = config, run_dir, model, data
        self.device = resolve_device(config.device)
        self.model.to(self.device)
        self.sampler = LengthBucketSampler(data.train.lengths, config.batch_size, seed=config.seed)
        self.steps_per_epoch = len(self.sampler.batches())
        self.pretrain_steps = self.steps_per_epoch * config.pretrain_epochs
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.pretrain_epochs and model.config.decoder_type == "hf":
            raise ValueError("pretrain_epochs re-initialises the decoder: not for a pretrained (hf) decoder")
        self.optimizer = make_optimizer(config, model)
        self.controller = None
        if config.target_kl is not None and model.config.has_latent:
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
        self._epoch_started = 0.0
        self._last_save = None  # clock reading of the last checkpoint, for save_minutes
        self.reporter = None  # opened by train(), after a resume has set the step
        self.plot_each_epoch = config.plot_each_epoch
        encoder_tokenizer = data.encoder_tokenizer
        self.encoder_pad_id = encoder_tokenizer.pad_token_id if encoder_tokenizer is not None else 0

    def resume_from(self, checkpoint: Path) -> None:
        if 0 < self.config.pretrain_epochs <= ckpt.read_json(checkpoint / ckpt.TRAINER_STATE_NAME)["epoch"]:
            self._start_vae_phase(reset_decoder=False)  # the checkpoint's optimiser state is the VAE phase's
        self.state, extra = ckpt.load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
        if self.controller is not None:
            if not (extra or {}).get("controller"):
                raise ValueError(
                    f"checkpoint {checkpoint} has no KL controller state: it does not fit this run"
                )
            self.controller.load_state_dict(extra["controller"])
        metrics = self.run_dir / ckpt.METRICS_NAME
        if metrics.is_file():  # drop lines written after the checkpoint: they will be written again
            records = read_records(metrics)
            rewrite_records(metrics, [r for r in records if r.get("step", 0) <= self.state["step"]])
        logger.info(
            "resumed from %s (step %d, epoch %d)",
            checkpoint.name,
            self.state["step"],
            self.state["epoch"] + 1,
        )

    def _autocast(self):
        if self.device.type == "cuda" and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _log(self, record: dict) -> None:
        append_record(self.run_dir / ckpt.METRICS_NAME, record)
        if self.reporter is not None:
            self.reporter.log(record)

    def _start_vae_phase(self, reset_decoder: bool = True) -> None:
        """End of autoencoder pretraining (Li et al. 2019): new decoder, optimiser and best-model record."""
        if reset_decoder:
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

    def _kl_weight(self) -> float:
        """0 while pretraining the autoencoder (and always for a language model, which has no KL term);
        then the schedule, counted from the VAE's first step."""
        step = self.state["step"] - self.pretrain_steps
        if step < 0 or not self.model.config.has_latent:
            return 0.0
        if self.controller is not None:
            return self.controller.beta
        return kl_weight(self.config, step, self.total_steps - self.pretrain_steps)

    def _train_step(self, batch: dict) -> dict:
        config = self.config
        weight = self._kl_weight()
        pretraining = self.state["step"] < self.pretrain_steps
        with self._autocast():
            output = self.model(
                **batch,
                kl_weight=weight,
                free_bits=0.0 if pretraining else config.free_bits,
                word_dropout=config.word_dropout,
                return_logits=False,
            )
        loss = output.loss.item()
        if not math.isfinite(loss):
            raise self._diverged("training loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        if config.max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
            if not math.isfinite(norm):  # checked before the update: the weights stay finite
                raise self._diverged("gradient norm", norm)
        self.optimizer.step()
        if config.lr_scheduler == "cosine":
            self.scheduler.step()
        metrics = {
            "loss": loss,
            "rec": output.rec_loss.mean().item(),
            "kl": output.kl.mean().item(),
            "kl_weight": weight,
        }
        if self.controller is not None and not pretraining:
            metrics["kl_target"] = self.controller.current_target()
            self.controller.update(metrics["kl"])  # the weight of the next step
        return metrics

    def _diverged(self, what: str, value: float) -> ValueError:
        """The error that stops a run whose loss or gradients stopped being finite numbers.

        Nothing is saved from that point on, so the best model and the checkpoints stay finite.
        """
        return ValueError(
            f"training stopped at step {self.state['step'] + 1} (epoch {self.state['epoch'] + 1}): the "
            f"{what} became {value}; the best model and the last checkpoint in {self.run_dir} are from before "
            f"it. Lower --learning-rate, keep --max-grad-norm on, or check the data"
        )

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; False when max_steps stopped it early."""
        config, state = self.config, self.state
        self.sampler.set_epoch(state["epoch"], state["batch_in_epoch"])
        self.model.train()
        bar = tqdm(
            self.sampler,
            total=len(self.sampler),
            desc=f"epoch {state['epoch'] + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for indices in bar:
            batch = {
                k: v.to(self.device)
                for k, v in collate(
                    self.data.train, indices, self.model.config.pad_token_id, self.encoder_pad_id
                ).items()
            }
            metrics = self._train_step(batch)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            bar.set_postfix(
                loss=f"{metrics['loss']:.2f}",
                kl=f"{metrics['kl']:.2f}"
                + (f"/{metrics['kl_target']:.1f}" if "kl_target" in metrics else ""),
                beta=f"{metrics['kl_weight']:.3f}",
            )
            if state["step"] % config.log_steps == 0:
                self._log(
                    {
                        "step": state["step"],
                        "epoch": state["epoch"] + 1,
                        "split": "train",
                        "lr": self.optimizer.param_groups[0]["lr"],
                        **metrics,
                    }
                )
            if config.max_steps is not None and state["step"] >= config.max_steps:
                self._checkpoint()
                return False
            if (config.save_steps and state["step"] % config.save_steps == 0) or (
                config.save_minutes and _clock() - self._last_save >= 60 * config.save_minutes
            ):
                self._checkpoint()
        return True

    def _end_epoch(self, seconds: float) -> bool:
        """Validate, keep the best model, step the plateau scheduler; True when early stopping fires."""
        config, state = self.config, self.state
        metrics = validate(self.model, self.data.validation, config.batch_size, seed=config.seed)
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
        if not self._target_reached():
            # While the KL still rises to its target, -ELBO rises with it by design: each epoch's model is
            # kept, and the best-model record (and early stopping) start once the target is reached.
            ckpt.save_model(self.run_dir, self.model, self.data.tokenizer, self.data.encoder_tokenizer)
        elif state["best_neg_elbo"] is None or metrics["neg_elbo"] < state["best_neg_elbo"]:
            state["best_neg_elbo"] = metrics["neg_elbo"]
            state["epochs_without_improvement"] = 0
            ckpt.save_model(self.run_dir, self.model, self.data.tokenizer, self.data.encoder_tokenizer)
        else:
            state["epochs_without_improvement"] += 1
        ckpt.write_json(self.run_dir / ckpt.HISTORY_NAME, state["history"])
        if self.plot_each_epoch:  # False from now on when matplotlib is missing: said once, in the log
            self.plot_each_epoch = write_training_plots(self.run_dir)
        if config.lr_scheduler == "plateau" and self._target_reached():
            self.scheduler.step(metrics["neg_elbo"])
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        state["epoch_seconds"] = 0.0
        if config.pretrain_epochs and state["epoch"] == config.pretrain_epochs:
            self._start_vae_phase()
            state["best_neg_elbo"], state["epochs_without_improvement"] = None, 0
        patience = config.early_stopping_patience
        return bool(patience) and state["epochs_without_improvement"] >= patience

    def _target_reached(self) -> bool:
        """False while a KL target is still to be reached (warming up, or the KL still rising to it)."""
        return self.controller is None or self.controller.reached

    def _checkpoint(self) -> None:
        self._last_save = now = _clock()
        if self.state["batch_in_epoch"]:
            self.state["epoch_seconds"] = now - self._epoch_started
        extra = {"controller": self.controller.state_dict()} if self.controller is not None else None
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
        """Train to the last epoch, early stop, or max_steps; return the validation history."""
        self.reporter = make_reporter(self.config.report_to, self.run_dir, self.state["step"])
        try:
            return self._train()
        finally:
            if self.reporter is not None:
                self.reporter.close()

    def _train(self) -> list[dict]:
        state = self.state
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
        return state["history"]


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


def train(
    config: TrainConfig | None,
    output_dir: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    overrides: dict | None = None,
) -> Path:
    """Train a text VAE into `output_dir`, or continue the run in `resume`; returns the run folder.

    On resume the saved training config is used, updated with `overrides` (for example more epochs).
    """
    if resume is not None:
        run_dir = Path(resume)
        checkpoints = _checkpoints_to_resume(run_dir)
        remove_stale_temporaries(run_dir)  # no writer is running: whatever is half-written was cut short
        saved = ckpt.read_json(run_dir / ckpt.TRAIN_CONFIG_NAME)
        config = TrainConfig.from_dict({**saved, **(overrides or {})})
        last = ckpt.read_json(checkpoints[-1] / ckpt.TRAINER_STATE_NAME)
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
        model, tokenizer, encoder_tokenizer = ckpt.load_run(run_dir)
        data = prepare_data(config, tokenizer, encoder_tokenizer)
    else:
        if config is None or output_dir is None:
            raise ValueError("give a training config and an output folder, or a run to resume")
        run_dir = Path(output_dir)
        torch.manual_seed(config.seed)
        source, tokenizer = None, None
        if config.init_decoder_from is not None:
            source, tokenizer, _ = ckpt.load_run(config.init_decoder_from)
        # Before touching the folder: bad data or a bad source model must not cost a user's files.
        check_reporter_available(config.report_to)
        data = prepare_data(config, tokenizer)
        model = build_model(config, data.tokenizer)
        if source is not None:
            model.init_decoder_from(source)
            logger.info("decoder initialised from %s", config.init_decoder_from)
        prepare_run_dir(run_dir, overwrite)
    # max_steps is a stop condition for this invocation, not a hyperparameter: a resumed run runs on.
    dataclasses.replace(config, max_steps=None).save(run_dir / ckpt.TRAIN_CONFIG_NAME)
    trainer = Trainer(config, run_dir, model, data)
    if resume is not None:
        trainer.resume_from(checkpoints[-1])
        # Finished means "reached the epochs asked for": a resume may ask for more.
        trainer.state["finished"] = trainer.state["epoch"] >= config.epochs
    else:
        ckpt.save_model(run_dir, model, data.tokenizer, data.encoder_tokenizer)
    trainer.train()
    if config.fit_prior and model.config.has_latent and trainer.state["finished"]:
        fit_final_prior(run_dir, data, trainer.device, config.seed)
    return run_dir


def fit_final_prior(run_dir: Path, data: PreparedData, device, seed: int) -> None:
    """Fit the aggregate-posterior prior of the run's best model (`sample --prior aggregate`) and save it."""
    from .priors import fit_run_prior

    started = time.monotonic()
    best = ckpt.load_model(run_dir, device)
    prior = fit_run_prior(best, data.train, data.validation, seed=seed)
    prior.save(run_dir)
    logger.info(
        "aggregate prior fitted: %d components (%.0f s); sample from it with --prior aggregate",
        prior.n_components,
        time.monotonic() - started,
    )
