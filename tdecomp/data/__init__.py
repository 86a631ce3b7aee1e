"""Dataset factory: ``create(name, root=, download=, seed=, subset=, **kwargs)`` → :class:`DataBundle`.

Every factory accepts those keywords (ignoring what it does not need) plus its own options,
which configs pass as ``data_kwargs``.
"""

from __future__ import annotations

from typing import Any

from .._registry import Registry
from .bundle import DataBundle

DATASETS: Registry = Registry("data")
register_dataset = DATASETS.register


def create(name: str, **kwargs: Any) -> DataBundle:
    """Build dataset ``name``; ``ValueError`` listing the registered names if unknown."""
    return DATASETS.get(name)(**kwargs)


def available_datasets() -> tuple[str, ...]:
    return DATASETS.names()


# Importing the dataset files registers their names.
from . import cifar, digits, fake, text, tiny_imagenet, translation  # noqa: E402,F401

__all__ = ["DATASETS", "DataBundle", "available_datasets", "create", "register_dataset"]
