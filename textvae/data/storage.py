"""Token storage: every sentence of a split in one flat int32 array with int64 offsets; collation.

Python lists of ints cost about 40 bytes a token (a pointer plus an int object); one flat int32 array costs
4, plus 8 per sentence for its offset: about 4.4 bytes a token on PTB, so ten million sentences fit in
about a gigabyte. Batches are cut out of it with numpy, without a Python list on the way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .tokenization import flatten_ids


class PackedSequences(Sequence):
    """Variable-length id sequences packed into `values` (W,) int32 with `offsets` (N + 1,) int64.

    Sequence i is `values[offsets[i] : offsets[i + 1]]`. Indexing gives that (L,) int32 array (a view);
    a slice (step 1) gives a `PackedSequences` sharing `values`.
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        values, offsets = np.asarray(values), np.asarray(offsets, dtype=np.int64)
        if values.dtype != np.int32 or values.ndim != 1:
            raise ValueError(f"values must be a 1-D int32 array, got {values.dtype} of shape {values.shape}")
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(values):
            raise ValueError(f"offsets must run from 0 to len(values) = {len(values)}, got {offsets[:3]}...")
        if np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must not decrease")
        self.values, self.offsets = values, offsets

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> PackedSequences:
        """Pack lists (or arrays) of ids."""
        values, lengths = flatten_ids(sequences)
        return cls.from_lengths(values, lengths)

    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray) -> PackedSequences:
        """Pack flat `values` (W,) cut into consecutive sequences of `lengths` (N,)."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(values, offsets)

    @classmethod
    def from_arrow(cls, column) -> PackedSequences:
        """Pack a pyarrow list (or large list) column of ids, an Array or a ChunkedArray.

        A single int32 chunk is used in place (a read-only view, memory-mapped when the table is); other
        columns are copied once into int32.
        """
        chunks = column.chunks if hasattr(column, "chunks") else [column]
        values, offsets, total = [], [np.zeros(1, dtype=np.int64)], 0
        for chunk in chunks:
            if chunk.null_count:
                raise ValueError(f"a column of token ids has {chunk.null_count} missing rows")
            chunk_offsets = chunk.offsets.to_numpy().astype(np.int64)
            child = chunk.values.slice(int(chunk_offsets[0]), int(chunk_offsets[-1] - chunk_offsets[0]))
            values.append(child.to_numpy(zero_copy_only=False))
            offsets.append(chunk_offsets[1:] - chunk_offsets[0] + total)
            total += int(chunk_offsets[-1] - chunk_offsets[0])
        if len(values) == 1 and values[0].dtype == np.int32:
            flat = values[0]
        elif values:
            flat = np.concatenate(values).astype(np.int32, copy=False)
        else:
            flat = np.zeros(0, dtype=np.int32)
        return cls(flat, np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError(f"PackedSequences slices take step 1, got {step}")
            stop = max(start, stop)
            offsets = self.offsets[start : stop + 1]
            return PackedSequences(self.values[offsets[0] : offsets[-1]], offsets - offsets[0])
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"sequence {index} out of range for {len(self)} sequences")
        index %= len(self)
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start, stop in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True):
            yield self.values[start:stop]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 length of every sequence."""
        return np.diff(self.offsets)

    def lengths_at(self, indices: Sequence[int]) -> np.ndarray:
        """(B,) int64 lengths of the sequences at `indices`, without the (N,) array of them all."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.offsets[indices + 1] - self.offsets[indices]

    @property
    def nbytes(self) -> int:
        """Bytes held by the two arrays."""
        return self.values.nbytes + self.offsets.nbytes

    def pad(self, indices: Sequence[int], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequences at `indices` -> (B, T) right-padded int64 ids and (B, T) mask, T the longest."""
        indices = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[indices]
        lengths = self.offsets[indices + 1] - starts  # (B,)
        longest = int(lengths.max()) if len(lengths) else 0
        mask = np.arange(longest) < lengths[:, None]  # (B, T)
        # Positions of the chosen tokens in `values`, row after row: the order of mask's True cells.
        ends = np.cumsum(lengths)
        positions = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(
            starts - (ends - lengths), lengths
        )
        ids = np.full(mask.shape, pad_token_id, dtype=np.int64)
        ids[mask] = self.values[positions]
        return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


def arrow_table(dataset, columns: Sequence[str], start: int = 0, stop: int | None = None):
    """Rows [start, stop) of a `datasets.Dataset`'s `columns` as one pyarrow Table, in the dataset's order.

    `filter`, `select` and `train_test_split` leave a dataset with an indices mapping, whose rows datasets
    gathers one row slice at a time, slowly; Arrow's `take` gathers them at once (scripts/README.md,
    "Measurements behind the code").
    """
    table = dataset.data.table.select(list(columns))
    stop = len(dataset) if stop is None else min(stop, len(dataset))
    indices = dataset._indices  # datasets' row mapping (private, no public accessor); None: table order
    if indices is None:
        return table.slice(start, max(stop - start, 0))
    return table.take(indices.column(0).slice(start, max(stop - start, 0)))


def _pack(sequences) -> PackedSequences:
    return sequences if isinstance(sequences, PackedSequences) else PackedSequences.from_lists(sequences)


@dataclass(eq=False)
class TokenizedSplit:
    """One split's token ids (`[BOS] + words + [EOS]` each) packed in flat arrays, fast to batch.

    input_ids: a `PackedSequences`, or lists of ids (packed on construction); `input_ids[i]` is sentence
    i's (L,) int32 ids. encoder_input_ids: the same sentences in a pretrained encoder's own vocabulary.
    """

    input_ids: PackedSequences
    encoder_input_ids: PackedSequences | None = None

    def __post_init__(self) -> None:
        self.input_ids = _pack(self.input_ids)
        if self.encoder_input_ids is not None:
            self.encoder_input_ids = _pack(self.encoder_input_ids)
            if len(self.encoder_input_ids) != len(self.input_ids):
                raise ValueError(
                    f"{len(self.encoder_input_ids)} encoder sequences for {len(self.input_ids)} sentences"
                )

    @classmethod
    def from_dataset(cls, dataset) -> TokenizedSplit:
        """From a `datasets.Dataset` with an `input_ids` column (and `encoder_input_ids`), such as
        `tokenize_corpus` gives, read as Arrow without a Python list."""
        names = [name for name in ("input_ids", "encoder_input_ids") if name in dataset.column_names]
        table = arrow_table(dataset, names)
        encoder_ids = table.column("encoder_input_ids") if "encoder_input_ids" in names else None
        return cls(
            input_ids=PackedSequences.from_arrow(table.column("input_ids")),
            encoder_input_ids=PackedSequences.from_arrow(encoder_ids) if encoder_ids is not None else None,
        )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 tokens per sentence, BOS and EOS included."""
        return self.input_ids.lengths

    def lengths_at(self, indices: Sequence[int]) -> np.ndarray:
        """(B,) int64 tokens of the sentences at `indices` (a batch's, cheaply: `lengths` is (N,))."""
        return self.input_ids.lengths_at(indices)

    def num_target_tokens(self) -> int:
        """Words plus one EOS per sentence: the PPL denominator (BOS is never predicted)."""
        return len(self.input_ids.values) - len(self)

    @property
    def nbytes(self) -> int:
        """Bytes of token storage (ids and offsets, the encoder's included)."""
        extra = self.encoder_input_ids.nbytes if self.encoder_input_ids is not None else 0
        return self.input_ids.nbytes + extra


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> (B, T) right-padded ids and (B, T) attention mask, T the longest."""
    return PackedSequences.from_lists(sequences).pad(range(len(sequences)), pad_token_id)


def collate(
    split: TokenizedSplit, indices: Sequence[int], pad_token_id: int, encoder_pad_token_id: int = 0
) -> dict:
    """The batch of the sentences at `indices`: `input_ids`, `attention_mask` (and encoder ids), (B, T)."""
    input_ids, attention_mask = split.input_ids.pad(indices, pad_token_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if split.encoder_input_ids is not None:
        encoder_ids, encoder_mask = split.encoder_input_ids.pad(indices, encoder_pad_token_id)
        batch.update(encoder_input_ids=encoder_ids, encoder_attention_mask=encoder_mask)
    return batch


@dataclass
class PreparedData:
    """Tokenized splits and the tokenizer(s) a run trains with (`prepare.prepare_data`).

    stream: with streaming, the training split as a `streaming.TrainingStream`, which the trainer reads
    instead of `train` (then only a sample of the training split, for fitting the prior).
    """

    tokenizer: object
    encoder_tokenizer: object | None
    train: TokenizedSplit
    validation: TokenizedSplit
    stream: object | None = None
