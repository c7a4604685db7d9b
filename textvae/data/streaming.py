"""Training on corpora larger than memory: the training split read as a `datasets` stream, in pools.

With `--streaming` the training split is never held whole. `datasets.load_dataset(..., streaming=True)`
reads it (a Hub id, a text / CSV / TSV / JSONL file, a folder, a named corpus), `IterableDataset.shuffle`
mixes it in a buffer each epoch (`set_epoch`), and `TrainingStream` reads it in pools of
`batch_size * POOL_BATCHES` sentences, tokenizes each pool with `token_ids.encode_text_batch` (the fast path of
the in-memory corpus) and batches it by length as `LengthBucketSampler` does, one pool at a time. One
epoch is one pass over the stream, so the number of steps in an epoch is known once the first pass ends.

A position in an epoch is (sentences of the stream consumed in whole pools, batches of the current pool
taken); checkpoints record it, and a resume skips the sentences (`IterableDataset.skip`: read, not
tokenized) and the batches, so that it trains on exactly what an uninterrupted run would have.

Validation: the corpus's validation split, read whole (it is small); else the first
min(ceil(validation_fraction x N), MAX_HELD_OUT) sentences of the stream in its stored order, N the
stream's size (counted only up to MAX_HELD_OUT / validation_fraction sentences), held out and never
trained on. The tokenizer is trained on the first `streaming_vocab_sentences` training sentences.
`PreparedData.train` holds only the first PRIOR_SENTENCES training sentences: the sample the aggregate
prior is fitted on at the end of training.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import datasets

from ..distributed import derived_seed
from .bucketing import LengthBucketSampler
from .config import DataConfig
from .corpora import _TABLE_FORMATS, check_utf8_file, resolve_source
from .storage import PackedSequences, PreparedData, TokenizedSplit
from .token_ids import encode_text_batch, warn_overlong
from .tokenization import WordLookup, load_backbone_tokenizers, train_tokenizer

logger = logging.getLogger(__name__)

POOL_BATCHES = 100  # batches of a pool, as LengthBucketSampler's pool_batches
MAX_HELD_OUT = 10_000  # most sentences held out of the stream for validation
PRIOR_SENTENCES = 20_000  # training sentences the aggregate prior is fitted on (fit-prior's --max-train)


def _non_blank(texts: list) -> list[bool]:
    return [isinstance(text, str) and bool(text.strip()) for text in texts]


def _check_file(path: Path) -> None:
    """A missing or empty file, without reading it (it may be larger than memory)."""
    if not path.is_file():
        raise ValueError(f"corpus file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"corpus file is empty: {path}")


def _text_streams(files: dict[str, list[Path]], encoding_errors: str) -> datasets.IterableDatasetDict:
    for path in (path for paths in files.values() for path in paths):
        _check_file(path)
        if encoding_errors == "strict":  # one pass now, not an error hours in, when the stream gets there
            check_utf8_file(path, hint="or pass --encoding-errors replace to replace bad bytes")
    return datasets.load_dataset(
        "text",
        data_files={split: [str(path) for path in paths] for split, paths in files.items()},
        encoding="utf-8-sig",  # a byte-order mark is no part of the first word
        encoding_errors=None if encoding_errors == "strict" else encoding_errors,
        streaming=True,
    )


def _table_streams(path: Path, text_column: str) -> datasets.IterableDatasetDict:
    _check_file(path)
    check_utf8_file(path)
    builder, options = _TABLE_FORMATS[path.suffix.lower()]
    if builder == "csv":
        options = {**options, "encoding": "utf-8-sig"}
    return datasets.load_dataset(builder, data_files={"train": str(path)}, streaming=True, **options)


def _hub_streams(name: str, config_name: str | None) -> datasets.IterableDatasetDict:
    try:
        streams = datasets.load_dataset(name, config_name, streaming=True)
    except Exception as error:  # datasets raises many types: offline, missing, gated, bad config
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"could not stream the Hub dataset {name!r} ({reason}); check the name and your network "
            f"connection, or pass a local text file or folder instead"
        ) from None
    if "validation" not in streams and "valid" in streams:
        streams["validation"] = streams.pop("valid")
    return streams


def _source_streams(data: DataConfig, hub_config=None):
    """The splits of a corpus as streams, its source found as `corpora.load_corpus` finds it."""
    source, encoding_errors, text_column = data.source, data.encoding_errors, data.text_column
    kind, where = resolve_source(source, data.data_dir, data.training_splits())
    if kind == "table":
        return _table_streams(where, text_column)
    if kind == "hub":
        return _hub_streams(where, hub_config)
    return _text_streams(where, encoding_errors)


def _text_stream(stream: datasets.IterableDataset, source: str, column: str) -> datasets.IterableDataset:
    """One split's stream reduced to its non-blank `text` column; `ValueError` naming a missing column."""
    columns = stream.column_names
    if columns is None:  # features not declared: read them off the first row
        first = next(iter(stream.take(1)), None)
        columns = list(first) if first is not None else [column]
    if column not in columns:
        raise ValueError(
            f"{source} has no column {column!r} (columns: {', '.join(columns)}); choose one with --text-column"
        )
    stream = stream.select_columns([column])
    if column != "text":
        stream = stream.rename_column(column, "text")
    return stream.filter(_non_blank, input_columns="text", batched=True, batch_size=1000)


def open_streams(data: DataConfig) -> tuple[datasets.IterableDataset, list[str] | None]:
    """The training split of `data.source` as a stream of non-blank `text` rows, in stored order, and the
    validation split's sentences (None when the corpus has none)."""
    streams = _source_streams(data)
    if "train" not in streams:
        raise ValueError(f"corpus {data.source} has no train split (it has {', '.join(streams)})")
    train = _text_stream(streams["train"], data.source, data.text_column)
    validation = None
    if "validation" in streams:
        rows = _text_stream(streams["validation"], data.source, data.text_column)
        validation = [row["text"] for row in rows]
    return train, validation


def tokenize_texts(texts: list, tokenizers: tuple, max_length: int | None, overlong: str):
    """(TokenizedSplit of the texts, how many were longer than `max_length`); see `token_ids.encode_text_batch`."""
    (ids, lengths), encoder, count = encode_text_batch(texts, tokenizers, max_length, overlong)
    encoder = PackedSequences.from_lengths(*encoder) if encoder is not None else None
    return TokenizedSplit(PackedSequences.from_lengths(ids, lengths), encoder), count


class TrainingStream:
    """The training split as a stream: shuffled in a buffer each epoch, read in pools of
    `batch_size * POOL_BATCHES` sentences, each pool tokenized and batched by length.

    dataset: an `IterableDataset` of `text` rows in stored order (the held-out head already skipped).
    tokenizers: (tokenizer, encoder tokenizer or None, the tokenizer's `WordLookup` or None).
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        tokenizers: tuple,
        data: DataConfig,
        batch_size: int,
        seed: int,
    ):
        self.dataset, self.tokenizers = dataset, tokenizers
        self.batch_size, self.seed = batch_size, seed
        self.buffer_size = data.streaming_buffer_size
        self.max_length, self.overlong = data.max_length, data.overlong
        self.pool_size = batch_size * POOL_BATCHES

    def epoch_dataset(self, epoch: int, skip: int = 0) -> datasets.IterableDataset:
        """The epoch's shuffled stream, from its `skip`-th sentence on."""
        stream = self.dataset.shuffle(seed=self.seed, buffer_size=self.buffer_size)
        if skip:
            stream = stream.skip(skip)
        stream.set_epoch(epoch)  # after skip, which starts a new dataset at epoch 0
        return stream

    def batches(
        self, epoch: int, position: tuple[int, int] = (0, 0)
    ) -> Iterator[tuple[TokenizedSplit, list[int], tuple[int, int]]]:
        """The rest of an epoch from `position`: (the pool's sentences, one global batch's indices into
        them, the position after that batch), batch after batch.

        position: (sentences of the epoch's stream before the current pool, batches of it already taken).
        """
        start, skip_batches = position
        overlong = read = 0
        pools = self.epoch_dataset(epoch, start).iter(batch_size=self.pool_size)
        for number, rows in enumerate(pools):
            pool_start = start + number * self.pool_size
            split, count = tokenize_texts(rows["text"], self.tokenizers, self.max_length, self.overlong)
            overlong, read = overlong + count, read + len(rows["text"])
            if count and number == 0 and epoch == 0:  # at once, as the in-memory corpus warns before training
                warn_overlong(count, read, "training (first pool)", self.max_length, self.overlong)
            # Keyed by where the pool starts: a resumed run batches the pool as the uninterrupted one did.
            seed = derived_seed(self.seed, epoch, pool_start) & 0xFFFF_FFFF
            sampler = LengthBucketSampler(
                split.lengths, self.batch_size, seed=seed, pool_batches=POOL_BATCHES
            )
            pool_batches = sampler.batch_arrays()
            for index in range(skip_batches, len(pool_batches)):
                yield split, pool_batches[index].tolist(), (pool_start, index + 1)
            skip_batches = 0
        if overlong and epoch == 0:  # the first pass's count; every pass reads the same sentences
            warn_overlong(overlong, read, "training (first pass)", self.max_length, self.overlong)


def _stream_head(stream: datasets.IterableDataset, count: int) -> list[str]:
    return [row["text"] for row in stream.take(count)]


def _counted(texts, counter: list[int]):
    for text in texts:
        counter[0] += 1
        yield text


def split_stream(data: DataConfig) -> tuple[datasets.IterableDataset, list[str], list[str]]:
    """(the training stream, the validation sentences, the stream's first training sentences: up to
    MAX_HELD_OUT / validation_fraction of them) of a streaming run's corpus, by the rule of this module."""
    train, validation = open_streams(data)
    head = _stream_head(train, math.ceil(MAX_HELD_OUT / data.validation_fraction))
    if not head:
        raise ValueError(f"the training stream of {data.source} holds no non-blank sentence")
    if validation is None:
        held = min(math.ceil(data.validation_fraction * len(head)), MAX_HELD_OUT)
        if len(head) - held < 1:
            raise ValueError(
                f"corpus {data.source} has {len(head)} sentence(s): training needs at least 2, one of them "
                f"held out for validation (or a folder with train.txt and valid.txt)"
            )
        validation, head = head[:held], head[held:]
        train = train.skip(held)
        logger.info("validation: the first %d sentences of the stream, held out of training", held)
    if not validation:
        raise ValueError(f"the validation split of {data.source} holds no non-blank sentence")
    return train, validation, head


def prepare_stream_data(
    data: DataConfig,
    tokenizer=None,
    encoder_tokenizer=None,
    model_options: dict | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> PreparedData:
    """`prepare.prepare_data` for `data.streaming`: validation and a prior sample in memory, the training
    split as a `TrainingStream` (`PreparedData.stream`) of global batches of `batch_size` sentences,
    shuffled with `seed`."""
    train, validation, head = split_stream(data)
    tokenizer, encoder_tokenizer = load_backbone_tokenizers(model_options or {}, tokenizer, encoder_tokenizer)
    if tokenizer is None:
        read = [0]
        texts = _counted((row["text"] for row in train.take(data.streaming_vocab_sentences)), read)
        tokenizer = train_tokenizer(texts, data.tokenizer_type, data.min_frequency, data.max_vocab_size)
        logger.info("tokenizer trained on the first %d training sentences of the stream", read[0])
    tokenizers = (tokenizer, encoder_tokenizer, WordLookup.from_tokenizer(tokenizer))
    valid_split, count = tokenize_texts(validation, tokenizers, data.max_length, data.overlong)
    if count:
        warn_overlong(count, len(validation), "validation", data.max_length, data.overlong)
    sample = list(itertools.islice(head, PRIOR_SENTENCES))
    prior_split, _ = tokenize_texts(sample, tokenizers, data.max_length, data.overlong)
    return PreparedData(
        tokenizer=tokenizer,
        encoder_tokenizer=encoder_tokenizer,
        train=prior_split,
        validation=valid_split,
        stream=TrainingStream(train, tokenizers, data, batch_size, seed),
    )
