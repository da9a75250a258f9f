"""Reproducible, resumable data order for training, and the loaders built on it.

The global data stream is an endless concatenation of epochs; epoch ``e`` is a permutation of the dataset
seeded by ``(seed, e)``, so epochs reshuffle deterministically. Step ``t`` takes stream positions
``[t * B, (t + 1) * B)`` for the global batch B; with N processes, rank r takes the r-th of N equal slices of
it. A single process and N processes therefore see the same global batch at every step, and the position to
resume from is simply ``step * B``: nothing about the order depends on how the run was started or stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


class StreamSampler(torch.utils.data.Sampler[int]):
    """Endless dataset indices for one rank, starting at global stream position ``start``.

    ``start`` must be a multiple of the global batch. Each step yields ``global_batch // world`` indices.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1, start: int = 0,
                 shuffle: bool = True):
        if n <= 0:
            raise ValueError(f"sampler: expected a non-empty dataset, got {n} items")
        if global_batch % world:
            raise ValueError(f"batch_size: expected a multiple of the {world} processes, got {global_batch}")
        if start % global_batch:
            raise ValueError(f"sampler: expected a start position that is a multiple of {global_batch}, "
                             f"got {start}")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.per_rank = global_batch // world
        self.start, self.shuffle = start, shuffle
        self._perm_epoch, self._perm = -1, np.arange(n)

    def _at(self, pos: int) -> int:
        epoch, offset = divmod(pos, self.n)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = epoch_permutation(self.n, self.seed, epoch), epoch
        return int(self._perm[offset])

    def indices_for_step(self, step: int) -> list[int]:
        """The indices this rank takes at global step ``step`` (for tests and inspection)."""
        base = step * self.global_batch + self.rank * self.per_rank
        return [self._at(base + j) for j in range(self.per_rank)]

    def __iter__(self) -> Iterator[int]:
        step = self.start // self.global_batch
        while True:
            yield from self.indices_for_step(step)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number for its own bookkeeping
        return 2**62


class _PositionSeeded(torch.utils.data.Dataset):
    """Gives each item a generator seeded by (seed, its stream position) when the dataset takes one
    (``dataset.get(i, rng)``, as ``ChunkDataset`` does), so augmentation is part of the reproducible
    stream."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)
        self.seeded = callable(getattr(dataset, "get", None))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, pos = key
        if self.seeded:
            return self.dataset.get(index, np.random.default_rng([self.seed, int(pos), 0xA06]))
        return self.dataset[index]


class _PositionSampler(StreamSampler):
    """StreamSampler that yields (index, stream position) pairs."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        step = self.start // self.global_batch
        while True:
            base = step * self.global_batch + self.rank * self.per_rank
            for j in range(self.per_rank):
                yield self._at(base + j), base + j
            step += 1


def train_loader(dataset, collate_fn, global_batch: int, seed: int, rank: int, world: int, start: int,
                 num_workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """An endless loader of per-rank batches, starting at stream position ``start``.

    The loader has its own generator, so building it draws nothing from the global torch RNG (a resumed run
    and an uninterrupted one keep identical global RNG streams), and worker seeds are the same in every run.
    """
    sampler = _PositionSampler(len(dataset), global_batch, seed, rank, world, start)
    dataset = _PositionSeeded(dataset, seed)
    gen = torch.Generator()
    gen.manual_seed(int(seed) * 7919 + rank)
    return torch.utils.data.DataLoader(
        dataset, batch_size=sampler.per_rank, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
        generator=gen, pin_memory=pin_memory, drop_last=False, persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def val_indices(n: int, batch: int, max_batches: int, rank: int, world: int,
                seed: int = 0) -> list[list[int]]:
    """Fixed validation batches for one rank: a seeded permutation of the split (episodes mixed), its first
    ``max_batches * batch * world`` items (all when ``max_batches`` is 0), dealt to ranks in strides."""
    perm = np.random.default_rng([int(seed), 0x0A1]).permutation(n) if n else np.zeros(0, int)
    if max_batches:
        perm = perm[: max_batches * batch * world]
    mine = perm[rank::world].tolist()
    return [mine[i: i + batch] for i in range(0, len(mine), batch)]


def stack_items(dataset, indices: Sequence[int], collate_fn) -> dict[str, Any]:
    return collate_fn([dataset[i] for i in indices])
