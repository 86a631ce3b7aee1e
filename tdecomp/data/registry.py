"""The data registry: name → factory (the package __init__ imports every factory file)."""

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
