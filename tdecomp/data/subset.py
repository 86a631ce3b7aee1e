"""Training-set subsets for quick runs."""

from __future__ import annotations

from torch.utils.data import Dataset, Subset


def take_subset(dataset: Dataset, size: int) -> Dataset:
    """The first ``size`` examples of ``dataset`` (all of it when ``size`` is 0)."""
    if size < 0:
        raise ValueError(f"subset must be ≥ 0, got {size}")
    if size == 0 or size >= len(dataset):
        return dataset
    return Subset(dataset, range(size))
