"""Model factory: names used in configs map to constructors.

``create(name, **kwargs)`` builds a registered model; data bundles supply ``num_classes`` and
``in_channels`` (or vocabulary sizes for text models), configs add e.g. ``width``.
"""

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


# Importing the model files registers their names.
from . import eigendamage, resnet_cifar, small, transformer, vgg, wide_resnet  # noqa: E402,F401

__all__ = ["MODELS", "available_models", "create", "register_model"]
