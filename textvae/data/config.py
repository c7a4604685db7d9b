"""`DataConfig`: the data recipe of a run (corpus, splits, tokenizer, lengths), apart from how it trains.

As transformers' `run_clm.py` keeps `DataTrainingArguments` apart from the training arguments, the options
that decide which sentences a run reads and how they become token ids live here; `TrainConfig.data` holds
one, evaluation and prior fitting read one from a run folder (`DataConfig.from_run`), and neither needs the
training options. Importable without torch. A saved `train_config.json` holds it as its `data` mapping;
files from before it (the same keys at the top level, `data` the corpus) still load (`split_flat_options`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_fields import check_type, option
from ..run_files import TRAIN_CONFIG_NAME, read_json

OVERLONG_POLICIES = ("truncate", "drop")
TOKENIZER_TYPES = ("word", "bpe")
ENCODING_ERRORS = ("strict", "replace", "ignore")


@dataclass
class DataConfig:
    """Which sentences a run reads and how they become token ids. Every field is a `textvae train` flag
    (`source` is `--data`) and a key of a config file's `data` mapping."""

    source: str = option(
        "ptb",
        "corpus (--data): a text file, a folder with train.txt / valid.txt, a named corpus (ptb, yelp_short) "
        "or a Hub dataset id",
        flag="data",
    )
    data_dir: str | None = option(None, "folder holding named corpora (default: $TEXTVAE_DATA, else data/)")
    text_column: str = option(
        "text", "column of a CSV / TSV / JSONL file or a Hub dataset that holds the sentences"
    )
    train_splits: str = option(
        "train",
        "the files of a folder or named corpus that make the training split, comma-separated: train reads "
        "train.txt; train,extra reads train.txt and extra.txt (yelp_short's extra sentences)",
    )
    validation_fraction: float = option(0.05, "share of train cut off as validation when the corpus has none")
    streaming: bool = option(
        False,
        "read the training split as a stream (datasets' streaming=True; Hub ids, text / CSV / TSV / JSONL "
        "files and folders), never whole in memory: shuffled in a buffer each epoch, tokenized and "
        "length-bucketed in pools of batch_size x 100 sentences. The tokenizer is trained on the first "
        "--streaming-vocab-sentences training sentences; validation is the corpus's validation split, else "
        "the first min(validation_fraction x N, 10000) sentences of the stream (N its size), never trained "
        "on. Steps per epoch are unknown: cyclical KL and cosine LR need --max-steps",
    )
    streaming_vocab_sentences: int = option(
        1_000_000, "streaming: the tokenizer is trained on this many sentences from the stream's start"
    )
    streaming_buffer_size: int = option(
        100_000, "streaming: sentences in the shuffle buffer (IterableDataset.shuffle's buffer_size)"
    )
    encoding_errors: str = option(
        "strict", "what to do with bytes that are not UTF-8: strict (error), replace or ignore"
    )
    # 128: PTB's longest sentence is 82 tokens and yelp_short's 15, so both stay whole; BOS + 128 + EOS fit
    # the transformer's 256 positions (256 would not); and one stray 100,000-word line no longer costs an
    # epoch minutes and gigabytes.
    max_length: int | None = option(
        128,
        "longest sentence kept, in tokens without BOS and EOS (default: 128); longer sentences are "
        "truncated or dropped (--overlong), with a warning that counts them; null in a config file: no limit",
    )
    overlong: str = option("truncate", "what to do with longer sentences: truncate or drop")
    tokenizer_type: str = option(
        "word", "word (whitespace, for pre-tokenized text such as PTB) or bpe (raw text)"
    )
    min_frequency: int = option(1, "words seen fewer times become unk")
    max_vocab_size: int | None = option(
        None, "largest vocabulary, special tokens included (BPE default 8000)"
    )
    split_seed: int | None = option(
        None,
        "seed of the validation cut when the corpus has no validation split (default: the training seed)",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """`ValueError` naming the first option whose value has the wrong type or is out of range."""
        for item in dataclasses.fields(self):
            setattr(self, item.name, check_type(item.name, getattr(self, item.name), item.type))
        choices = {
            "overlong": OVERLONG_POLICIES,
            "tokenizer_type": TOKENIZER_TYPES,
            "encoding_errors": ENCODING_ERRORS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("min_frequency", "streaming_vocab_sentences", "streaming_buffer_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_length", "max_vocab_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if not self.source.strip():
            raise ValueError("data (the corpus) must be set, got an empty name")
        splits = self.training_splits()
        if not splits or any(not name or "/" in name or name.startswith(".") for name in splits):
            raise ValueError(
                f"train_splits must be file names without .txt, comma-separated, got {self.train_splits!r}"
            )

    def training_splits(self) -> tuple[str, ...]:
        """`train_splits` as a tuple of names ("train", "extra")."""
        return tuple(name.strip() for name in self.train_splits.split(","))

    def corpus_options(self, seed: int | None = None) -> dict[str, Any]:
        """The `load_corpus` options that decide which sentences land in each split."""
        return {
            "validation_fraction": self.validation_fraction,
            "seed": self.split_seed if self.split_seed is not None else (seed or 0),
            "encoding_errors": self.encoding_errors,
            "text_column": self.text_column,
            "train_splits": self.training_splits(),
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataConfig:
        """Build from a mapping; unknown keys raise `ValueError` naming them."""
        if not isinstance(values, dict):
            raise ValueError(f"data must be a corpus name or a mapping of data options, got {values!r}")
        names = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown data option(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_run(cls, run: str | os.PathLike) -> DataConfig:
        """The data recipe a saved run was trained with (its train_config.json, old or new layout)."""
        path = Path(run) / TRAIN_CONFIG_NAME
        if not path.is_file():
            raise ValueError(
                f"{run} has no {TRAIN_CONFIG_NAME}: which corpus it was trained on is not recorded"
            )
        values = read_json(path)
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of training options")
        data, _ = split_flat_options(values)
        return cls.from_dict(data)


FLAT_NAMES = tuple(item.name for item in dataclasses.fields(DataConfig) if item.name != "source")


def split_flat_options(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the data options, the rest) of a mapping of training options, in either layout: a `data` mapping
    (today's), or `data` naming the corpus with the other data options at the top level (before
    `DataConfig`); the top-level ones win over the mapping's, as flags over a config file's. The rest
    keeps the training seed, which a data recipe without a seed of its own takes for its validation cut."""
    rest = dict(values)
    data = rest.pop("data", None)
    flat = {name: rest.pop(name) for name in FLAT_NAMES if name in rest}
    if isinstance(data, DataConfig):
        data = data.to_dict()
    if isinstance(data, str):
        data = {"source": data}
    elif data is None:
        data = {}
    elif not isinstance(data, dict):
        raise ValueError(f"data must be a corpus name or a mapping of data options, got {data!r}")
    data = {**data, **flat}
    if data.get("split_seed") is None and isinstance(rest.get("seed"), int):
        data["split_seed"] = rest["seed"]
    return data, rest
