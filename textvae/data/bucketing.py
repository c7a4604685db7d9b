"""Length bucketing: batches of sentences of similar length, in a seeded random order (`LengthBucketSampler`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


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
