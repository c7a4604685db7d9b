"""Corpora as token ids: tokenizing with `datasets` and Arrow, fast, on every core.

`tokenize_corpus` turns a corpus (`corpora.load_corpus`) into `input_ids` and `length` columns, one flat
array per split that `TokenizedSplit.from_dataset` (storage.py) uses without a copy. `encode_text_batch`
is one batch of it (streaming reads pools through it too).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import datasets
import numpy as np
import pyarrow as pa
from datasets.fingerprint import generate_random_fingerprint
from datasets.utils.tqdm import are_progress_bars_disabled
from tqdm.auto import tqdm

from .tokenization import WordLookup, count_arrow_words, encode_texts, flatten_ids

logger = logging.getLogger(__name__)

OVERLONG_POLICIES = ("truncate", "drop")
# Texts tokenized at once: Arrow and Rust work best on large batches, and 100,000 PTB sentences take ~15 MB.
TEXT_BATCH_SIZE = 100_000
RELEASE_EVERY = 10  # batches of a thread between two returns of Arrow's free memory to the system
_STRING_LIMIT = 2**31 - 1  # bytes an Arrow string array (int32 offsets) can hold


def iter_texts(dataset: datasets.Dataset, batch_size: int = TEXT_BATCH_SIZE, column: str = "text"):
    """The texts of a dataset, in its row order, as lists of at most `batch_size` strings (read as Arrow)."""
    yield from map_text_batches(dataset, pa.ChunkedArray.to_pylist, 1, batch_size, column)


_thread_batches = threading.local()


def _release_arrow_memory(force: bool = False) -> None:
    """Give the free memory of Arrow's allocator back to the system, every RELEASE_EVERY batches of the
    calling thread (or now, with `force`).

    Arrow keeps what its kernels (take, string functions) freed. Given back once a batch, the call cost a
    third of a pass over ten million rows (the pages are faulted in again); once every ten, ~2 s. It is
    made in the thread that freed the memory: mimalloc keeps a heap per thread.
    """
    _thread_batches.count = getattr(_thread_batches, "count", 0) + 1
    if force or _thread_batches.count % RELEASE_EVERY == 0:
        pa.default_memory_pool().release_unused()


def worker_threads() -> int:
    """Threads for work done by Arrow's kernels, which release the GIL: one per usable core, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def _text_reader(dataset: datasets.Dataset, column: str) -> Callable[[int, int], pa.ChunkedArray]:
    """A function (start, stop) -> those rows of a dataset's column, in the dataset's row order.

    Without an indices mapping, a zero-copy slice. With one (`filter`, `select`, `train_test_split`),
    the column is made one contiguous array once: Arrow's `take` on a chunked column concatenates every
    chunk first, so each batch's take would copy the whole column, twice over with two threads
    (scripts/README.md, "Measurements behind the code").
    """
    values = dataset.data.table.column(column)
    indices = dataset._indices  # datasets' row mapping (private, no public accessor); None: table order
    if indices is None:
        return lambda start, stop: values.slice(start, max(stop - start, 0))
    if pa.types.is_string(values.type) and values.nbytes > _STRING_LIMIT:
        values = values.cast(pa.large_string())  # past 2 GiB of text, one array needs int64 offsets
    values = values.combine_chunks()
    rows = indices.column(0)
    return lambda start, stop: pa.chunked_array([values.take(rows.slice(start, max(stop - start, 0)))])


def map_text_batches(
    dataset: datasets.Dataset,
    function: Callable,
    threads: int | None = None,
    batch_size: int | None = None,
    column: str = "text",
) -> Iterator:
    """`function(texts)` of each batch of a dataset's texts, yielded in the dataset's row order.

    texts: a pyarrow string chunked array of at most `batch_size` (default TEXT_BATCH_SIZE) rows. The
    batches are read and processed on `threads` threads (default `worker_threads()`), so `function`
    should spend its time in code that releases the GIL, as Arrow's kernels and Rust tokenizers do.
    """
    threads, batch_size = threads or worker_threads(), batch_size or TEXT_BATCH_SIZE
    reader, starts = [_text_reader(dataset, column)], range(0, len(dataset), batch_size)

    def work(start: int):
        result = function(reader[0](start, start + batch_size))
        _release_arrow_memory(force=start + batch_size >= len(dataset))
        return result

    if threads == 1:
        yield from map(work, starts)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="textvae-text")
    try:
        pending = deque()  # at most 2 x threads batches in flight: memory stays a few batches
        for start in starts:
            pending.append(pool.submit(work, start))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        reader.clear()  # the contiguous column, before giving back what the pool's threads left
        _release_arrow_memory(force=True)


def count_corpus_words(dataset: datasets.Dataset, column: str = "text") -> Counter:
    """Whitespace word counts of a dataset's texts (`tokenization.count_words`'s), counted by Arrow on
    several threads, several times faster than a Counter over `str.split` (scripts/README.md,
    "Measurements behind the code")."""
    counts = Counter()
    for batch in map_text_batches(dataset, count_arrow_words, column=column):
        counts.update(batch)
    return counts


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
        tokenized[split] = _tokenize_split(
            split, dataset, (tokenizer, encoder_tokenizer, lookup), max_length, overlong
        )
    return tokenized


def _tokenize_split(split: str, dataset, tokenizers: tuple, max_length: int | None, overlong: str):
    """One split of `tokenize_corpus`; tokenizers: (tokenizer, encoder tokenizer or None, its WordLookup)."""
    parts, overlong_count = [], 0

    def encode(texts):
        return encode_text_batch(texts, tokenizers, max_length, overlong), len(texts)

    # Threads for the Arrow word lookup; Rust tokenizers use every core on their own, and a tokenizer
    # called with options (the encoder's) must not be called from two threads at once ("Already borrowed").
    threads = None if tokenizers[2] is not None and tokenizers[1] is None else 1
    with tqdm(
        total=len(dataset), desc=f"tokenizing {split}", unit="sent", disable=are_progress_bars_disabled()
    ) as progress:
        for (ids, encoder, count), size in map_text_batches(dataset, encode, threads):
            parts.append((ids, encoder))
            overlong_count += count
            progress.update(size)
    if overlong_count:
        warn_overlong(
            overlong_count, len(dataset), "training" if split == "train" else split, max_length, overlong
        )
    return _tokenized_dataset(parts)


def warn_overlong(count: int, total: int, what: str, max_length: int, overlong: str) -> None:
    """The warning that counts the sentences of a split that `max_length` truncated or dropped."""
    logger.warning(
        "%s %d of %d %s sentences longer than %d tokens; --max-length / --overlong change this",
        "truncated" if overlong == "truncate" else "dropped",
        count,
        total,
        what,
        max_length,
    )


def encode_text_batch(texts, tokenizers: tuple, max_length: int | None, overlong: str):
    """One batch of texts (a list or an Arrow string array) -> ((ids, lengths), encoder (ids, lengths) or
    None, how many were longer than `max_length`).

    ids are `[BOS] + words + [EOS]` of every kept sentence, flat (W,) int32, with their (N,) lengths;
    tokenizers: (tokenizer, encoder tokenizer or None, the tokenizer's `WordLookup` or None).
    """
    tokenizer, encoder_tokenizer, lookup = tokenizers
    ids, lengths = encode_texts(tokenizer, texts, lookup)
    encoder = None
    if encoder_tokenizer is not None:
        plain = texts if isinstance(texts, list) else texts.to_pylist()
        encoder = flatten_ids(encoder_tokenizer(plain, truncation=True)["input_ids"])
    count = 0
    if max_length is not None:
        ids, lengths, encoder, count = _limit_length(ids, lengths, encoder, max_length, overlong)
    return _add_bos_eos(ids, lengths, tokenizer), encoder, count


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
