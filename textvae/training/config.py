"""`TrainConfig`: every training option, with help text, checks, and YAML / JSON loading; KL weight schedules.

Architecture options live in `TextVAEConfig`; `TrainConfig.model` holds the overrides of its defaults,
so no architecture hyperparameter is declared twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.noise import EncoderNoise
from ..models.options import ARCHITECTURE_OPTIONS
from ..run_files import write_text_atomically

KL_SCHEDULES = ("constant", "linear", "logistic", "cyclical")
# The default rate, in nats per sentence: the yelp_short recipe that reconstructed best (README, "What
# makes z carry the sentence": 40 nats with the bidirectional encoder, bag-of-words loss and z-to-output
# defaults of TextVAEConfig). 60 nats bought 0.7 BLEU more than 40 there for 20 more nats of KL, which the
# aggregate prior has to cover for sampling; `make demo` trains at 40. The PTB rate table will revisit it.
DEFAULT_TARGET_KL = 40.0
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULERS = ("plateau", "cosine", "constant")
REPORT_TO = ("none", "tensorboard")  # the names of transformers' TrainingArguments.report_to


def _option(default, help: str, **kwargs):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """How to train a text VAE. Every field is a `textvae train --flag` and a key of a config file."""

    # Data and tokenizer.
    data: str = _option(
        "ptb",
        "corpus: a text file, a folder with train.txt / valid.txt, a named corpus (ptb) or a Hub dataset id",
    )
    data_dir: str | None = _option(None, "folder holding named corpora (default: $TEXTVAE_DATA, else data/)")
    text_column: str = _option(
        "text", "column of a CSV / TSV / JSONL file or a Hub dataset that holds the sentences"
    )
    validation_fraction: float = _option(
        0.05, "share of train cut off as validation when the corpus has none"
    )
    streaming: bool = _option(
        False,
        "read the training split as a stream (datasets' streaming=True; Hub ids, text / CSV / TSV / JSONL "
        "files and folders), never whole in memory: shuffled in a buffer each epoch, tokenized and "
        "length-bucketed in pools of batch_size x 100 sentences. The tokenizer is trained on the first "
        "--streaming-vocab-sentences training sentences; validation is the corpus's validation split, else "
        "the first min(validation_fraction x N, 10000) sentences of the stream (N its size), never trained "
        "on. Steps per epoch are unknown: cyclical KL and cosine LR need --max-steps",
    )
    streaming_vocab_sentences: int = _option(
        1_000_000, "streaming: the tokenizer is trained on this many sentences from the stream's start"
    )
    streaming_buffer_size: int = _option(
        100_000, "streaming: sentences in the shuffle buffer (IterableDataset.shuffle's buffer_size)"
    )
    encoding_errors: str = _option(
        "strict", "what to do with bytes that are not UTF-8: strict (error), replace or ignore"
    )
    # 128: PTB's longest sentence is 82 tokens and yelp_short's 15, so both stay whole; BOS + 128 + EOS fit
    # the transformer's 256 positions (256 would not); and one stray 100,000-word line no longer costs an
    # epoch minutes and gigabytes.
    max_length: int | None = _option(
        128,
        "longest sentence kept, in tokens without BOS and EOS (default: 128); longer sentences are "
        "truncated or dropped (--overlong), with a warning that counts them; null in a config file: no limit",
    )
    overlong: str = _option("truncate", "what to do with longer sentences: truncate or drop")
    tokenizer_type: str = _option(
        "word", "word (whitespace, for pre-tokenized text such as PTB) or bpe (raw text)"
    )
    min_frequency: int = _option(1, "words seen fewer times become unk")
    max_vocab_size: int | None = _option(
        None, "largest vocabulary, special tokens included (BPE default 8000)"
    )
    model: dict[str, Any] = _option(
        {}, "architecture options (TextVAEConfig fields); on the command line, one flag each"
    )
    # Optimisation.
    epochs: int = _option(30, "number of passes over the training set")
    max_steps: int | None = _option(
        None, "stop after this many optimiser steps in all (a checkpoint is written)"
    )
    max_minutes: float | None = _option(
        None,
        "stop this invocation after this many minutes of training, at a checkpoint; --resume continues "
        "(a time-boxed run: a shared machine, a lease)",
    )
    batch_size: int = _option(
        32,
        "sentences per optimiser step: the global batch, which N torchrun processes share (about "
        "batch_size / N each), so the learning rate means the same on any number of processes",
    )
    optimizer: str = _option("adam", f"one of {', '.join(OPTIMIZERS)}")
    learning_rate: float = _option(1e-3, "initial learning rate")
    weight_decay: float = _option(0.0, "weight decay")
    momentum: float = _option(0.0, "momentum (sgd only)")
    lr_scheduler: str = _option(
        "plateau", f"one of {', '.join(LR_SCHEDULERS)}; plateau decays on valid -ELBO as He et al. 2019 do"
    )
    lr_decay: float = _option(0.5, "plateau: factor applied to the learning rate")
    lr_patience: int = _option(1, "plateau: epochs without improvement before a decay")
    max_grad_norm: float = _option(5.0, "gradient clipping norm (0 disables it)")
    # KL weight and the remedies for posterior collapse.
    kl_schedule: str | None = _option(
        None,
        f"KL weight schedule, one of {', '.join(KL_SCHEDULES)}; giving one turns the default target_kl off "
        "(default: none, the target rate sets the weight; linear with target_kl 0)",
    )
    kl_start: float = _option(0.0, "KL weight at step 0 (linear)")
    kl_warmup_steps: int = _option(
        10000, "linear: steps from kl_start to beta; logistic: midpoint is half of it"
    )
    kl_logistic_slope: float = _option(
        0.0025, "logistic: slope k of beta / (1 + exp(-k (step - midpoint))) (Bowman et al. 2016)"
    )
    kl_cycles: int = _option(4, "cyclical: number of cycles over the whole training (Fu et al. 2019)")
    kl_cycle_ratio: float = _option(0.5, "cyclical: share of each cycle spent increasing the weight")
    beta: float = _option(
        1.0,
        "maximum KL weight; with target_kl the controller's bound: above 1 it can hold a KL below what the "
        "model keeps at weight 1 (which the bag-of-words loss and free bits raise)",
    )
    target_kl: float | None = _option(
        None,
        "target rate: KL in nats per sentence that a PI controller keeps the batch KL at by setting the KL "
        "weight each step (ControlVAE, Shao et al. 2020); replaces kl_schedule, beta bounds the weight; "
        f"0: off (default: {DEFAULT_TARGET_KL:g} for a VAE unless kl_schedule is given)",
    )
    target_kl_warmup_steps: int = _option(0, "steps over which the KL target rises linearly from 0")
    kl_controller_kp: float = _option(0.01, "proportional gain of the KL controller (ControlVAE's)")
    kl_controller_ki: float = _option(1e-4, "integral gain of the KL controller (ControlVAE's)")
    free_bits: float = _option(
        0.125,
        "free bits per latent dimension, in nats, on the batch-mean KL (Kingma et al. 2016); 0 disables",
    )
    pretrain_epochs: int = _option(
        0,
        "train the first N epochs as an autoencoder (KL weight 0), then re-initialise the decoder and train "
        "the VAE (Li et al. 2019); the KL schedule starts when the VAE does",
    )
    init_decoder_from: str | None = _option(
        None,
        "a trained textvae model folder (usually a language model of the same decoder size) whose decoder "
        "and tokenizer this run starts from; the weights that read z start at zero",
    )
    word_dropout: float = _option(
        0.0, "probability of replacing a decoder input word by unk (Bowman et al. 2016)"
    )
    encoder_noise: str = _option(
        "0,0,0,0",
        "denoising input for the encoder (Shen et al. 2020): drop,blank,substitute,k, the probabilities of "
        "dropping a word, replacing it by unk and by a random word, and the most places a word moves in a "
        "local shuffle; the encoder reads the corrupted sentence in training, the decoder reconstructs "
        "the clean one (Shen et al.'s DAAE: 0.3,0,0,0)",
    )
    aggressive_encoder: bool = _option(
        False,
        "aggressive inference network training (He et al. 2019): before each step's decoder-only update, "
        "update only the encoder on fresh training batches until its loss stops falling, until the first "
        "epoch whose valid mutual information I(x; z) falls below the previous epoch's",
    )
    aggressive_max_steps: int = _option(
        100, "aggressive_encoder: most encoder-only updates before each decoder update (He et al.'s 100)"
    )
    fit_prior: bool = _option(
        True,
        "at the end of training, fit the aggregate-posterior prior (a Gaussian mixture on the training set's "
        "posterior means, Ghosh et al. 2020) that sample --prior aggregate uses",
    )
    # Loop, checkpoints, machine.
    early_stopping_patience: int = _option(
        5, "stop after this many epochs without a better valid -ELBO (0 disables)"
    )
    save_steps: int = _option(0, "also write a checkpoint every this many steps (0: off; see save_minutes)")
    save_minutes: float = _option(
        5.0,
        "also write a checkpoint once this many minutes of training have passed since the last one, so a "
        "stop costs minutes, not an epoch (0: off)",
    )
    keep_checkpoints: int = _option(1, "how many checkpoint-<step>/ folders to keep")
    log_steps: int = _option(50, "write training metrics every this many steps")
    seed: int = _option(0, "random seed (batches, initialisation, dropout, z samples)")
    device: str = _option(
        "auto",
        "cuda, cpu, or auto (cuda when available); under torchrun cuda is each process's local-rank GPU",
    )
    bf16: bool = _option(True, "bf16 autocast on CUDA (ignored on the CPU)")
    progress: bool = _option(True, "show a progress bar")
    plot_each_epoch: bool = _option(
        True, "after each epoch, redraw curves.png and the other figures in the run folder (needs matplotlib)"
    )
    report_to: str = _option(
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
        for option in dataclasses.fields(self):
            value = check_type(option.name, getattr(self, option.name), option.type)
            setattr(self, option.name, value)
        for name, value in self.model.items():
            if name in ARCHITECTURE_OPTIONS:
                self.model[name] = check_type(name, value, ARCHITECTURE_OPTIONS[name].type)
        choices = {
            "kl_schedule": KL_SCHEDULES,
            "optimizer": OPTIMIZERS,
            "lr_scheduler": LR_SCHEDULERS,
            "overlong": ("truncate", "drop"),
            "tokenizer_type": ("word", "bpe"),
            "encoding_errors": ("strict", "replace", "ignore"),
            "report_to": REPORT_TO,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        positive = ("epochs", "batch_size", "kl_cycles", "keep_checkpoints", "log_steps", "min_frequency")
        positive += ("streaming_vocab_sentences", "streaming_buffer_size", "aggressive_max_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "max_length", "max_vocab_size"):
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
        for name in ("word_dropout", "validation_fraction", "kl_cycle_ratio", "lr_decay"):
            value = getattr(self, name)
            low_ok = name == "word_dropout" and value == 0
            if not (0 < value < 1 or low_ok or (name == "kl_cycle_ratio" and value == 1)):
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.streaming and self.max_steps is None and self.schedule_needs_total_steps():
            what = "lr_scheduler cosine" if self.lr_scheduler == "cosine" else "kl_schedule cyclical"
            raise ValueError(
                f"{what} needs the total number of steps, which a stream does not know before its first pass "
                f"ends: with streaming, give max_steps (--max-steps), or use another schedule"
            )
        if self.aggressive_encoder and self.streaming:
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

    def corpus_options(self) -> dict[str, Any]:
        """The `load_corpus` options that decide which sentences land in each split."""
        return {
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "encoding_errors": self.encoding_errors,
            "text_column": self.text_column,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the options as JSON, atomically (a stop never leaves half a file)."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise `ValueError` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load a `.yaml` / `.yml` / `.json` config file."""
        return cls.from_dict(read_config_file(path))


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def check_type(name: str, value: Any, annotation: str) -> Any:
    """`value` checked against a field's annotation (`"int"`, `"float | None"`, `"dict[str, Any]"`, ...).

    Config files and Python callers can pass anything: `epochs: "three"`, `beta: .nan`. Returns the value
    (an int where a float is expected becomes a float); `ValueError` naming the option otherwise.
    """
    kinds = [part.strip() for part in str(annotation).split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ValueError(f"{name} must be set, got null")
    kind = kinds[0]
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        return float(value)
    expected = {"int": int, "str": str, "bool": bool}.get(kind, dict if kind.startswith("dict") else None)
    if expected is None:
        return value
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {_TYPE_NAMES.get(kind, 'a mapping')}, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; `ValueError` for a missing, unreadable or non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read config file {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of options")
    return values


def kl_weight(config: TrainConfig, step: int, total_steps: int) -> float:
    """The KL weight at optimiser step `step` (0-based) of `total_steps`.

    linear: from kl_start to beta over kl_warmup_steps (Bowman et al. 2016; He et al. 2019).
    logistic: beta / (1 + exp(-k (step - kl_warmup_steps / 2))) (Bowman et al. 2016).
    cyclical: kl_cycles cycles, each rising linearly from 0 to beta over the first kl_cycle_ratio of the
    cycle and then held at beta (Fu et al. 2019).
    """
    beta = config.beta
    if config.kl_schedule == "constant":
        return beta
    if config.kl_schedule == "linear":
        if config.kl_warmup_steps == 0:
            return beta
        return min(beta, config.kl_start + (beta - config.kl_start) * step / config.kl_warmup_steps)
    if config.kl_schedule == "logistic":
        exponent = -config.kl_logistic_slope * (step - config.kl_warmup_steps / 2)
        return beta / (1.0 + math.exp(min(exponent, 700.0)))
    period = max(total_steps / config.kl_cycles, 1.0)
    position = (step % period) / period
    return beta * min(1.0, position / config.kl_cycle_ratio)
