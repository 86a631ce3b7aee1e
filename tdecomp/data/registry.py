"""The data registry: name → factory (the package __init__ imports every factory file)."""

from __future__ import annotations

from typing import Any

from .._registry import Registry
from .bundle import DataBundle
from .subset import split_training

DATASETS: Registry = Registry("data")
register_dataset = DATASETS.register


def create(name: str, *, seed: int = 0, subset: int = 0, val_fraction: float = 0.0, val_seed: int = 0,
           **kwargs: Any) -> DataBundle:
    """Build dataset ``name`` (``ValueError`` listing the registered names if unknown), then carve
    the validation split (``val_fraction``, drawn with ``val_seed``) and the training subset
    (``subset`` examples, drawn with ``seed``) out of its training data:
    :func:`~tdecomp.data.subset.split_training`. ``kwargs`` go to the factory."""
    bundle = DATASETS.get(name)(seed=seed, **kwargs)
    return split_training(bundle, val_fraction, val_seed, subset, seed)


def available_datasets() -> tuple[str, ...]:
    return DATASETS.names()
