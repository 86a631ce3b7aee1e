"""Batches of at most N tokens, as fairseq's ``--max-tokens`` forms them (microsoft/fnl_paper
Transformer-PyTorch/fairseq/data.py:293-337,358-383, ``shuffled_batches_by_size``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def token_batches(sizes: Sequence[tuple[int, int]], max_tokens: int, order: Sequence[int]) -> list[list[int]]:
    """Split ``order`` greedily into batches whose padded size (examples × longest source or
    target) stays ≤ ``max_tokens``; an example longer than that gets a batch of its own.

    ``sizes[i]`` = (source length, target length) of example i. As ``_make_batches`` (data.py:293-337)
    with ``allow_different_src_lens``: the longest length so far counts the next example too."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i in order:
        longest = max(longest, *sizes[i])
        if batch and (len(batch) + 1) * longest > max_tokens:
            batches.append(batch)
            batch, longest = [], max(sizes[i])
        batch.append(int(i))
    return batches + [batch] if batch else batches


class TokenBatchSampler(Sampler[list[int]]):
    """Each epoch: a random permutation, stably sorted by target then source length (similar
    lengths together, random order among equals), cut by :func:`token_batches`, batches shuffled
    (data.py:358-373). Under DDP process ``rank`` takes every ``world_size``-th batch (all
    processes the same number). The batch count does not depend on the epoch: the sorted length
    sequence, and so the cuts, are the same for every permutation."""

    def __init__(self, sizes: Sequence[tuple[int, int]], max_tokens: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self.max_tokens, self.seed, self.rank, self.world_size = max_tokens, seed, rank, world_size
        self.epoch = 0
        self._count = len(self._batches()) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.sizes))
        order = order[np.argsort(self.sizes[order, 1], kind="stable")]
        order = order[np.argsort(self.sizes[order, 0], kind="stable")]
        batches = token_batches(self.sizes.tolist(), self.max_tokens, order)
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.rank :: self.world_size][: self._count])

    def __len__(self) -> int:
        return self._count
