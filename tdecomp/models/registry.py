"""The model registry: name → factory (the package __init__ imports every factory file)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .._registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name``; ``ValueError`` listing the registered names if unknown."""
    return MODELS.get(name)(**kwargs)


def available_models() -> tuple[str, ...]:
    return MODELS.names()
