"""The training loop: data, model, optimiser, KL schedule, validation, best model, early stopping, resume.

`train(config)` starts a run in `output_dir`; `train(None, resume=RUN)` continues one from its last
`checkpoint-<step>/` and reaches the same weights as an uninterrupted run with the same seed.
Under torchrun every process calls `train` and trains the same model on its share of each global batch
(`distributed.py` says how); the weights after each step equal those of one process.
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
from . import distributed
from .configuration import TextVAEConfig
from .data import LengthBucketSampler, TokenizedSplit, collate, iter_texts, load_corpus, tokenize_corpus
from .distributed import all_reduce_sum, derived_seed, differentiable_all_reduce_sum, shard_bounds
from .modeling import TextVAEModel, free_bits_kl, gaussian_kl
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
# Streams of a step's seeds, `derived_seed(seed, step, stream)`: z's noise and word dropout, dropout layers
# (one stream per process), and the new decoder after autoencoder pretraining.
_STEP_DRAWS, _DROPOUT_LAYERS, _DECODER_RESET = 0, 1, 2


@dataclass
class PreparedData:
    """Tokenized splits and the tokenizer(s) a run trains with."""

    tokenizer: object
    encoder_tokenizer: object | None
    train: TokenizedSplit
    validation: TokenizedSplit


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; a requested cuda device must exist; under torchrun, the GPU
    of the process's local rank (`distributed.process_device`)."""
    return distributed.process_device(name)


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
        # Texts read as Arrow in large batches: iterating corpus["train"]["text"] takes ~75 s a million rows.
        texts = (text for batch in iter_texts(corpus["train"]) for text in batch)
        tokenizer = train_tokenizer(texts, config.tokenizer_type, config.min_frequency, config.max_vocab_size)
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
def validate(
    model: TextVAEModel, split: TokenizedSplit, batch_size: int, seed: int = 0, shard: bool = False
) -> dict:
    """rec, KL, -ELBO (weight 1) per sentence, the PPL bound, active units and the (Z,) KL per dimension.

    z is drawn with a generator of its own for each batch, seeded by (seed, batch number), so validation
    neither depends on nor moves the training RNG. shard: in a process group, every process scores every
    N-th batch and the figures are summed over the processes (every process must call it); they equal
    one process's up to the order of the sums.
    """
    model.eval()
    device = next(model.parameters()).device
    batches = LengthBucketSampler(split.lengths, batch_size, shuffle=False).batch_arrays()
    rank, processes = (distributed.rank(), distributed.world_size()) if shard else (0, 1)
    sums = torch.zeros(2 + model.config.latent_dim, dtype=torch.float64, device=device)  # rec, kl, (Z,)
    means = []
    for number in range(rank, len(batches), processes):
        batch = {
            k: v.to(device) for k, v in collate(split, batches[number], model.config.pad_token_id).items()
        }
        z = None
        if model.config.has_latent:
            mu, logvar = model.encode(
                batch.get("encoder_input_ids", batch["input_ids"]),
                batch.get("encoder_attention_mask", batch["attention_mask"]),
            )
            generator = torch.Generator(device=device).manual_seed(derived_seed(seed, number))
            z = model.reparameterize(mu, logvar, generator)
            kl = gaussian_kl(mu, logvar).double()  # (B, Z)
            sums[1] += kl.sum()
            sums[2:] += kl.sum(dim=0)
            means.append((number, mu.float().cpu()))
        rec, _ = model.reconstruction_loss(batch["input_ids"], batch["attention_mask"], z)
        sums[0] += rec.double().sum()
    if shard:
        distributed.all_reduce_sum(sums)
        means = [item for part in distributed.gather_objects(means) for item in part]
    count, tokens = len(split), split.num_target_tokens()
    rec_total, kl_total = sums[:2].tolist()
    metrics = {"rec": rec_total / count, "kl": kl_total / count}
    metrics["neg_elbo"] = metrics["rec"] + metrics["kl"]
    metrics["ppl_bound"] = math.exp((rec_total + kl_total) / tokens)
    if means:
        means = torch.cat([mu for _, mu in sorted(means, key=lambda item: item[0])])  # (N, Z)
        metrics["au"] = int((means.var(dim=0) >= 0.01).sum())
        metrics["kl_per_dim"] = (sums[2:] / count).tolist()  # which dimensions carry the KL
    return metrics


class Trainer:
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
        self.sampler = LengthBucketSampler(data.train.lengths, config.batch_size, seed=config.seed)
        self.steps_per_epoch = self.sampler.num_batches
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

    def _autocast(self):
        if self.device.type == "cuda" and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        append_record(self.run_dir / ckpt.METRICS_NAME, record)
        if self.reporter is not None:
            self.reporter.log(record)

    def _start_vae_phase(self, reset_decoder: bool = True) -> None:
        """End of autoencoder pretraining (Li et al. 2019): new decoder, optimiser and best-model record."""
        if reset_decoder:
            # Seeded by the step alone: every process draws the same new decoder, resumed or not.
            torch.manual_seed(derived_seed(self.config.seed, self.state["step"], _DECODER_RESET))
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

    def _shard_batch(self, indices: list[int]) -> dict:
        """This process's share of a global batch, moved to the device, with the step's random draws.

        The draws (z's noise eps, the word dropout draws) are made for the whole global batch from a
        generator seeded by (seed, step), and each process keeps the rows of its sentences: N processes
        draw exactly what one process does, and a resumed run what an uninterrupted one does.
        When the global batch has fewer sentences than there are processes (an epoch's ragged last batch),
        a process without one computes the first sentence with weight 0, so that every process still
        takes part in the step (BN-VAE's batch statistics then count that sentence twice).
        """
        count = len(indices)
        start, stop = shard_bounds(count, self.rank, self.world_size)
        self._global_batch_size, self._shard_weight = count, 1.0
        if start == stop:
            start, stop, self._shard_weight = 0, 1, 0.0
        pad_ids = (self.model.config.pad_token_id, self.encoder_pad_id)
        batch = {
            k: v.to(self.device) for k, v in collate(self.data.train, indices[start:stop], *pad_ids).items()
        }
        generator = self._generator.manual_seed(
            derived_seed(self.config.seed, self.state["step"], _STEP_DRAWS)
        )
        if self.model.config.has_latent:
            eps = torch.randn((count, self.model.config.latent_dim), generator=generator, device=self.device)
            batch["eps"] = eps[start:stop]  # (B, Z)
        if self.config.word_dropout > 0:
            longest = int(self.sampler.lengths[indices].max())
            draws = torch.rand((count, longest - 1), generator=generator, device=self.device)
            batch["word_dropout_draws"] = draws[start:stop]  # (B, T - 1) of the global batch's T
        return batch

    def _global_batch_loss(self, output, kl_weight: float, free_bits: float) -> tuple[torch.Tensor, dict]:
        """(the tensor to differentiate, the global batch's figures) from this process's shard's output.

        The figures (rec, KL per dimension) are sums over the global batch, from one all-reduce; free bits
        floor the global batch-mean KL per dimension. The reduction carries gradients and
        DistributedDataParallel averages the N processes' gradients, so the shard's rec sum is scaled by
        N / B: the averaged gradient is exactly the gradient of the global batch's mean loss, however
        unequal the shards. For one process it is the plain batch-mean loss.
        """
        size, weight = self._global_batch_size, self._shard_weight
        rec_sum = output.rec_loss.float().sum() * weight
        kl_sums = output.kl_per_dim.float().sum(dim=0) * weight  # (Z,)
        sums = differentiable_all_reduce_sum(torch.cat([kl_sums, rec_sum.detach()[None]]))  # (Z + 1,)
        kl_term = free_bits_kl(sums[:-1] / size, free_bits)
        objective = rec_sum * (self.world_size / size) + kl_weight * kl_term
        rec_total, kl_total, term = torch.stack([sums[-1], sums[:-1].sum(), kl_term.detach()]).tolist()
        metrics = {
            "loss": rec_total / size + kl_weight * term,
            "rec": rec_total / size,
            "kl": kl_total / size,
        }
        if output.bow_loss is not None:  # the bag-of-words loss (Zhao et al. 2017), a mean over the batch
            bow_weight = self.model.config.bag_of_words_loss
            bow_sum = output.bow_loss.float().sum() * weight
            objective = objective + bow_weight * bow_sum * (self.world_size / size)
            metrics["bow"] = all_reduce_sum(bow_sum.detach().clone()).item() / size
            metrics["loss"] += bow_weight * metrics["bow"]
        return objective, metrics

    def _train_step(self, batch: dict) -> dict:
        """One optimiser step on this process's shard (`_shard_batch`) of the global batch."""
        config = self.config
        weight = self._kl_weight()
        pretraining = self.state["step"] < self.pretrain_steps
        # Dropout layers draw from torch's generator: seeded by (seed, step, rank), a resumed run repeats
        # them, and the processes draw independent masks.
        torch.manual_seed(derived_seed(config.seed, self.state["step"], _DROPOUT_LAYERS, self.rank))
        with self._autocast():
            output = self.forward_model(
                **batch,
                kl_weight=weight,
                free_bits=0.0 if pretraining else config.free_bits,
                word_dropout=config.word_dropout,
                return_logits=False,
            )
        objective, metrics = self._global_batch_loss(output, weight, 0.0 if pretraining else config.free_bits)
        if not math.isfinite(metrics["loss"]):  # the global figure: every process stops together
            raise self._diverged("training loss", metrics["loss"])
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if config.max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
            if not math.isfinite(norm):  # checked before the update: the weights stay finite
                raise self._diverged("gradient norm", norm)
        self.optimizer.step()
        if config.lr_scheduler == "cosine":
            self.scheduler.step()
        metrics["kl_weight"] = weight
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
            disable=not config.progress or not self.is_main,
            leave=False,
        )
        for indices in bar:
            metrics = self._train_step(self._shard_batch(indices))
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
        metrics = validate(
            self.model, self.data.validation, config.batch_size, seed=config.seed, shard=self.world_size > 1
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
        save = False
        if not self._target_reached():
            # While the KL still rises to its target, -ELBO rises with it by design: each epoch's model is
            # kept, and the best-model record (and early stopping) start once the target is reached.
            save = True
        elif state["best_neg_elbo"] is None or metrics["neg_elbo"] < state["best_neg_elbo"]:
            state["best_neg_elbo"] = metrics["neg_elbo"]
            state["epochs_without_improvement"] = 0
            save = True
        else:
            state["epochs_without_improvement"] += 1
        if self.is_main:
            if save:
                ckpt.save_model(self.run_dir, self.model, self.data.tokenizer, self.data.encoder_tokenizer)
            ckpt.write_json(self.run_dir / ckpt.HISTORY_NAME, state["history"])
        if self.plot_each_epoch and self.is_main:  # False from now on when matplotlib is missing
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
        if not self.is_main:  # the state is the same on every process: the main one saves it
            return
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


def _resume_config(run_dir: Path, overrides: dict | None) -> tuple[TrainConfig, Path]:
    """The config of a run to resume (its saved options updated with `overrides`) and its last checkpoint;
    `ValueError` when there is nothing to resume or the run is complete. Reads files only."""
    checkpoints = _checkpoints_to_resume(run_dir)
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
    return config, checkpoints[-1]


def _prepare_data_everywhere(config: TrainConfig, tokenizer=None) -> PreparedData:
    """`prepare_data` on every process. A tokenizer still to be trained is trained by the main process
    alone and handed to the others: each training its own, BPE merges of equal counts could differ."""
    if tokenizer is not None or distributed.world_size() == 1:
        with distributed.shared_errors():
            return prepare_data(config, tokenizer)
    main, data = distributed.is_main_process(), None
    with distributed.shared_errors():
        if main:
            data = prepare_data(config)
    tokenizers = distributed.broadcast_object((data.tokenizer, data.encoder_tokenizer) if main else None)
    with distributed.shared_errors():
        if not main:
            data = prepare_data(config, *tokenizers)
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
            data = prepare_data(config, tokenizer, encoder_tokenizer)
    else:
        with distributed.shared_errors():
            source, tokenizer = None, None
            if config.init_decoder_from is not None:
                source, tokenizer, _ = ckpt.load_run(config.init_decoder_from)
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
        if main:  # max_steps stops this invocation; it is no hyperparameter: a resumed run runs on
            dataclasses.replace(config, max_steps=None).save(run_dir / ckpt.TRAIN_CONFIG_NAME)
        trainer = Trainer(config, run_dir, model, data)
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
    trainer = _set_up(config, run_dir, checkpoint, overwrite)
    trainer.train()
    has_latent = trainer.model.config.has_latent
    if config.fit_prior and has_latent and trainer.state["finished"] and trainer.is_main:
        fit_final_prior(run_dir, trainer.data, trainer.device, config.seed)
    distributed.barrier()  # the others wait for the run folder to be complete
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
