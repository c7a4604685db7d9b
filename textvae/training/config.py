"""`TrainConfig`: every training option, with help text, checks, and YAML / JSON loading.

Architecture options live in `TextVAEConfig`; `TrainConfig.model` holds the overrides of its defaults,
so no architecture hyperparameter is declared twice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_fields import check_type, option, read_config_file
from ..data.config import DataConfig, split_flat_options
from ..data.noise import EncoderNoise
from ..models.architecture import ARCHITECTURE_OPTIONS
from ..run_files import write_text_atomically
from .kl_weight import KL_SCHEDULES

# The default rate, in nats per sentence: the yelp_short recipe that reconstructed best (README, "What
# makes z carry the sentence": 40 nats with the bidirectional encoder, bag-of-words loss and z-to-output
# defaults of TextVAEConfig). 60 nats bought 0.7 BLEU more than 40 there for 20 more nats of KL, which the
# aggregate prior has to cover for sampling; `make demo` trains at 40. The PTB rate table will revisit it.
DEFAULT_TARGET_KL = 40.0
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULERS = ("plateau", "cosine", "constant")
REPORT_TO = ("none", "tensorboard")  # the names of transformers' TrainingArguments.report_to


@dataclass
class TrainConfig:
    """How to train a text VAE. Every field is a `textvae train --flag` and a key of a config file."""

    data: DataConfig = field(
        default_factory=DataConfig,
        metadata={"help": "the data recipe (`DataConfig`): corpus, splits, tokenizer, sentence lengths"},
    )
    model: dict[str, Any] = option(
        {}, "architecture options (TextVAEConfig fields); on the command line, one flag each"
    )
    # Optimisation.
    epochs: int = option(30, "number of passes over the training set")
    max_steps: int | None = option(
        None, "stop after this many optimiser steps in all (a checkpoint is written)"
    )
    max_minutes: float | None = option(
        None,
        "stop this invocation after this many minutes of training, at a checkpoint; --resume continues "
        "(a time-boxed run: a shared machine, a lease)",
    )
    batch_size: int = option(
        32,
        "sentences per optimiser step: the global batch, which N torchrun processes share (about "
        "batch_size / N each), so the learning rate means the same on any number of processes",
    )
    optimizer: str = option("adam", f"one of {', '.join(OPTIMIZERS)}")
    learning_rate: float = option(1e-3, "initial learning rate")
    weight_decay: float = option(0.0, "weight decay")
    momentum: float = option(0.0, "momentum (sgd only)")
    lr_scheduler: str = option(
        "plateau", f"one of {', '.join(LR_SCHEDULERS)}; plateau decays on valid -ELBO as He et al. 2019 do"
    )
    lr_decay: float = option(0.5, "plateau: factor applied to the learning rate")
    lr_patience: int = option(1, "plateau: epochs without improvement before a decay")
    max_grad_norm: float = option(5.0, "gradient clipping norm (0 disables it)")
    # KL weight and the remedies for posterior collapse.
    kl_schedule: str | None = option(
        None,
        f"KL weight schedule, one of {', '.join(KL_SCHEDULES)}; giving one turns the default target_kl off "
        "(default: none, the target rate sets the weight; linear with target_kl 0)",
    )
    kl_start: float = option(0.0, "KL weight at step 0 (linear)")
    kl_warmup_steps: int = option(
        10000, "linear: steps from kl_start to beta; logistic: midpoint is half of it"
    )
    kl_logistic_slope: float = option(
        0.0025, "logistic: slope k of beta / (1 + exp(-k (step - midpoint))) (Bowman et al. 2016)"
    )
    kl_cycles: int = option(4, "cyclical: number of cycles over the whole training (Fu et al. 2019)")
    kl_cycle_ratio: float = option(0.5, "cyclical: share of each cycle spent increasing the weight")
    beta: float = option(
        1.0,
        "maximum KL weight; with target_kl the controller's bound: above 1 it can hold a KL below what the "
        "model keeps at weight 1 (which the bag-of-words loss and free bits raise)",
    )
    target_kl: float | None = option(
        None,
        "target rate: KL in nats per sentence that a PI controller keeps the batch KL at by setting the KL "
        "weight each step (ControlVAE, Shao et al. 2020); replaces kl_schedule, beta bounds the weight; "
        f"0: off (default: {DEFAULT_TARGET_KL:g} for a VAE unless kl_schedule is given)",
    )
    target_kl_warmup_steps: int = option(0, "steps over which the KL target rises linearly from 0")
    kl_controller_kp: float = option(0.01, "proportional gain of the KL controller (ControlVAE's)")
    kl_controller_ki: float = option(1e-4, "integral gain of the KL controller (ControlVAE's)")
    free_bits: float = option(
        0.125,
        "free bits per latent dimension, in nats, on the batch-mean KL (Kingma et al. 2016); 0 disables",
    )
    pretrain_epochs: int = option(
        0,
        "train the first N epochs as an autoencoder (KL weight 0), then re-initialise the decoder and train "
        "the VAE (Li et al. 2019); the KL schedule starts when the VAE does",
    )
    init_decoder_from: str | None = option(
        None,
        "a trained textvae model folder (usually a language model of the same decoder size) whose decoder "
        "and tokenizer this run starts from; the weights that read z start at zero",
    )
    word_dropout: float = option(
        0.0, "probability of replacing a decoder input word by unk (Bowman et al. 2016)"
    )
    encoder_noise: str = option(
        "0,0,0,0",
        "denoising input for the encoder (Shen et al. 2020): drop,blank,substitute,k, the probabilities of "
        "dropping a word, replacing it by unk and by a random word, and the most places a word moves in a "
        "local shuffle; the encoder reads the corrupted sentence in training, the decoder reconstructs "
        "the clean one (Shen et al.'s DAAE: 0.3,0,0,0)",
    )
    aggressive_encoder: bool = option(
        False,
        "aggressive inference network training (He et al. 2019): before each step's decoder-only update, "
        "update only the encoder on fresh training batches until its loss stops falling, until the first "
        "epoch whose valid mutual information I(x; z) falls below the previous epoch's",
    )
    aggressive_max_steps: int = option(
        100, "aggressive_encoder: most encoder-only updates before each decoder update (He et al.'s 100)"
    )
    fit_prior: bool = option(
        True,
        "at the end of training, fit the aggregate-posterior prior (a Gaussian mixture on the training set's "
        "posterior means, Ghosh et al. 2020) that sample --prior aggregate uses",
    )
    # Loop, checkpoints, machine.
    early_stopping_patience: int = option(
        5, "stop after this many epochs without a better valid -ELBO (0 disables)"
    )
    save_steps: int = option(0, "also write a checkpoint every this many steps (0: off; see save_minutes)")
    save_minutes: float = option(
        5.0,
        "also write a checkpoint once this many minutes of training have passed since the last one, so a "
        "stop costs minutes, not an epoch (0: off)",
    )
    keep_checkpoints: int = option(1, "how many checkpoint-<step>/ folders to keep")
    log_steps: int = option(50, "write training metrics every this many steps")
    seed: int = option(0, "random seed (batches, initialisation, dropout, z samples)")
    device: str = option(
        "auto",
        "cuda, cpu, or auto (cuda when available); under torchrun cuda is each process's local-rank GPU",
    )
    bf16: bool = option(True, "bf16 autocast on CUDA (ignored on the CPU)")
    progress: bool = option(True, "show a progress bar")
    plot_each_epoch: bool = option(
        True, "after each epoch, redraw curves.png and the other figures in the run folder (needs matplotlib)"
    )
    report_to: str = option(
        "none", f"where else to send the metrics: {', '.join(REPORT_TO)} (event files in <run>/tensorboard/)"
    )

    def __post_init__(self) -> None:
        self.resolve_rate_defaults()
        self.validate()

    def resolve_rate_defaults(self) -> None:
        """Fill the unset kl_schedule and target_kl, so a saved config reads the same under later defaults.

        What users come for is reconstructing and interpolating their sentences, which needs z to carry
        them: by default the KL is held at DEFAULT_TARGET_KL nats (README, "What makes z carry the
        sentence"). A schedule given without a target means the schedule alone (the papers' recipes); a
        target of 0 turns the controller off.
        """
        schedule_given = self.kl_schedule is not None
        if not schedule_given:
            self.kl_schedule = "linear"
        latent = not isinstance(self.model, dict) or (
            self.model.get("latent_dim", 1) != 0 and not self.model.get("deterministic", False)
        )
        if self.target_kl is None and not schedule_given and latent:
            self.target_kl = DEFAULT_TARGET_KL
        if self.target_kl == 0:
            self.target_kl = None

    def validate(self) -> None:
        """Raise `ValueError` naming the first option whose value has the wrong type or is out of range."""
        if not isinstance(self.data, DataConfig):
            self.data = DataConfig.from_dict(split_flat_options({"data": self.data})[0])
        if self.data.split_seed is None:  # the validation cut follows the training seed unless told otherwise
            self.data.split_seed = (
                self.seed if isinstance(self.seed, int) and not isinstance(self.seed, bool) else 0
            )
        for item in dataclasses.fields(self):
            if item.name != "data":
                setattr(self, item.name, check_type(item.name, getattr(self, item.name), item.type))
        for name, value in self.model.items():
            if name in ARCHITECTURE_OPTIONS:
                self.model[name] = check_type(name, value, ARCHITECTURE_OPTIONS[name].type)
        choices = {
            "kl_schedule": KL_SCHEDULES,
            "optimizer": OPTIMIZERS,
            "lr_scheduler": LR_SCHEDULERS,
            "report_to": REPORT_TO,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        positive = (
            "epochs",
            "batch_size",
            "kl_cycles",
            "keep_checkpoints",
            "log_steps",
            "aggressive_max_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps",):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        non_negative = (
            "learning_rate",
            "weight_decay",
            "momentum",
            "max_grad_norm",
            "kl_start",
            "kl_warmup_steps",
            "beta",
            "free_bits",
            "early_stopping_patience",
            "pretrain_epochs",
            "save_steps",
            "save_minutes",
            "target_kl_warmup_steps",
            "kl_controller_kp",
            "kl_controller_ki",
            "lr_patience",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"target_kl must be positive (0: off), got {self.target_kl}")
        noise = self.noise()  # ValueError for a bad value
        deterministic = self.model.get("deterministic", False)
        if self.target_kl is not None and deterministic:
            raise ValueError("target_kl sets a VAE's rate: a deterministic autoencoder has no KL term")
        if noise.active and self.model.get("latent_dim", 1) == 0:
            raise ValueError(
                "encoder_noise corrupts the encoder's input: a language model (latent_dim 0) has none"
            )
        if self.pretrain_epochs >= self.epochs:
            raise ValueError(
                f"pretrain_epochs ({self.pretrain_epochs}) must be smaller than epochs ({self.epochs})"
            )
        if self.init_decoder_from is not None and self.pretrain_epochs:
            raise ValueError("init_decoder_from and pretrain_epochs conflict: pretraining resets the decoder")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("word_dropout", "kl_cycle_ratio", "lr_decay"):
            value = getattr(self, name)
            low_ok = name == "word_dropout" and value == 0
            if not (0 < value < 1 or low_ok or (name == "kl_cycle_ratio" and value == 1)):
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.data.streaming and self.max_steps is None and self.schedule_needs_total_steps():
            what = "lr_scheduler cosine" if self.lr_scheduler == "cosine" else "kl_schedule cyclical"
            raise ValueError(
                f"{what} needs the total number of steps, which a stream does not know before its first pass "
                f"ends: with streaming, give max_steps (--max-steps), or use another schedule"
            )
        if self.aggressive_encoder and self.data.streaming:
            raise ValueError(
                "aggressive_encoder draws its encoder batches from the whole training split at random, which "
                "a stream does not offer: drop streaming or aggressive_encoder"
            )
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping of architecture options, got {self.model!r}")

    def schedule_needs_total_steps(self) -> bool:
        """Whether the KL or learning-rate schedule is laid out over the whole run's steps."""
        return self.lr_scheduler == "cosine" or (self.kl_schedule == "cyclical" and self.target_kl is None)

    def noise(self) -> EncoderNoise:
        """The encoder's input noise (`encoder_noise`), parsed."""
        return EncoderNoise.parse(self.encoder_noise)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the options as JSON, atomically (a stop never leaves half a file)."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (a `data` mapping, or the layout before `DataConfig`: `data` the corpus and
        the data options at the top level); unknown keys raise `ValueError` naming them."""
        data, rest = split_flat_options(values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(rest) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(data=DataConfig.from_dict(data), **rest)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load a `.yaml` / `.yml` / `.json` config file."""
        return cls.from_dict(read_config_file(path))
