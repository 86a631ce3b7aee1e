"""Model factory: names used in configs map to constructors.

``create(name, **kwargs)`` builds a registered model; data bundles supply ``num_classes`` and
``in_channels`` (or vocabulary sizes for text models), configs add e.g. ``width``.
"""

# Importing the model files registers their names.
from . import conv1d, eigendamage, fairseq_transformer, resnet_cifar, small, transformer, vgg, wide_resnet  # noqa: F401
from .registry import MODELS, available_models, create, register_model

__all__ = ["MODELS", "available_models", "create", "register_model"]
