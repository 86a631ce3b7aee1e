"""Subsets of the training data: the validation split and the per-seed training subset.

Both are stratified by class where examples are ``(input, integer class)`` pairs, and uniform
draws otherwise (translation, language modelling). Each draw has its own NumPy generator, seeded
with (purpose, seed): the validation split from ``split_seed`` (every run of a sweep validates on
the same examples), the training subset from the run's ``seed`` (resampled per seed); neither
touches torch's global generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .bundle import DataBundle

VALIDATION, SUBSET = 1, 2  # generator stream per purpose: equal seeds still give unrelated draws


class ExampleSubset(Subset):
    """``dataset`` at ``indices``, keeping per-example token ``sizes`` (batches by tokens) if it has them."""

    @property
    def sizes(self) -> list[Any]:
        sizes = self.dataset.sizes  # AttributeError (getattr's default) when the dataset has none
        return [sizes[i] for i in self.indices]


def _integer_labels(values: Any) -> np.ndarray | None:
    """``values`` as a 1-D int64 array if they are integer labels, else None."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 1 or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        return None
    return array.astype(np.int64)


def _label_of(item: Any) -> int | None:
    """The class of an ``(input, label)`` item with an integer label (int or 0-d integer tensor)."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return None
    label = item[1]
    if isinstance(label, torch.Tensor):
        ok = label.ndim == 0 and not label.dtype.is_floating_point and not label.dtype.is_complex
        return int(label) if ok and label.dtype != torch.bool else None
    return int(label) if isinstance(label, (int, np.integer)) and not isinstance(label, bool) else None


def class_labels(dataset: Dataset) -> np.ndarray | None:
    """The integer class of every example (N,), or None when examples are not ``(input, class)``.

    Read without touching the examples where the dataset holds them: a ``TensorDataset`` of
    (inputs, labels), a ``Subset`` of such, ``targets`` (torchvision) or ``labels``; otherwise by
    reading every example (the first that is no ``(input, integer)`` pair ends the search), under
    a forked torch generator so augmentation or masking drawn on access leaves the run's stream.
    """
    if isinstance(dataset, Subset):
        labels = class_labels(dataset.dataset)
        return None if labels is None else labels[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, TensorDataset):
        return _integer_labels(dataset.tensors[1]) if len(dataset.tensors) == 2 else None
    for name in ("targets", "labels"):
        stored = getattr(dataset, name, None)
        labels = _integer_labels(stored) if stored is not None else None
        if labels is not None and len(labels) == len(dataset):
            return labels
    labels = []
    with torch.random.fork_rng(devices=[]):
        for i in range(len(dataset)):
            label = _label_of(dataset[i])
            if label is None:
                return None
            labels.append(label)
    return np.asarray(labels, dtype=np.int64)


def stratified_draw(labels: np.ndarray | None, n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct indices of ``0 … n−1``, sorted.

    With ``labels`` (n,): class c of n_c examples contributes ⌊count·n_c/n⌋ or that + 1 of them
    (largest remainders get the + 1, ties broken at random, so the total is ``count``), drawn
    uniformly within the class. Without: ``count`` drawn uniformly from all.
    """
    if labels is None:
        return np.sort(rng.permutation(n)[:count])
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    take, remainder = np.divmod(count * sizes, n)  # exact integer quotas
    extra = np.lexsort((rng.permutation(len(sizes)), -remainder))[: count - take.sum()]
    take[extra] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(take)]
    return np.sort(np.concatenate(chosen))


def _generator(purpose: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([purpose, seed])


def split_training(bundle: DataBundle, val_fraction: float = 0.0, split_seed: int = 0,
                   subset: int = 0, seed: int = 0) -> DataBundle:
    """``bundle`` with a validation split carved out of its training data, then the training part
    cut to ``subset`` examples (0, or ≥ its size: all of it).

    ``val_fraction`` (of the training examples, rounded) become ``bundle.val``, read through
    ``bundle.train_for_eval`` when the dataset gives one (no augmentation), drawn with
    ``split_seed``; the subset is drawn with the run's ``seed``. Both are stratified
    (:func:`stratified_draw`) when the examples carry class labels. With neither, the training
    dataset is returned as it is.
    """
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 0:
        raise ValueError(f"subset must be an int ≥ 0 (training examples; 0: all), got {subset!r}")
    train, n = bundle.train, len(bundle.train)
    n_val = round(val_fraction * n)
    if val_fraction and not 0 < n_val < n:
        raise ValueError(f"val_fraction={val_fraction} of {n} training examples leaves {n_val} for validation "
                         f"and {n - n_val} for training; choose a val_fraction that leaves both non-empty")
    if not n_val and not 0 < subset < n:
        return bundle
    labels = class_labels(train)
    kept = np.arange(n)
    if n_val:
        held = stratified_draw(labels, n, n_val, _generator(VALIDATION, split_seed))
        kept = np.setdiff1d(kept, held)
        source = bundle.train_for_eval() if bundle.train_for_eval is not None else train
        bundle.val = ExampleSubset(source, held.tolist())
    if 0 < subset < len(kept):
        part = None if labels is None else labels[kept]
        kept = kept[stratified_draw(part, len(kept), subset, _generator(SUBSET, seed))]
    bundle.train = ExampleSubset(train, kept.tolist())
    return bundle
