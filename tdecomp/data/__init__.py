"""Dataset factory: ``create(name, root=, download=, seed=, subset=, **kwargs)`` → :class:`DataBundle`.

Every factory accepts those keywords (ignoring what it does not need) plus its own options,
which configs pass as ``data_kwargs``.
"""

# Importing the dataset files registers their names.
from . import cifar, digits, mnist1d, text, tiny_imagenet, translation  # noqa: F401
from .bundle import DataBundle
from .registry import DATASETS, available_datasets, create, register_dataset

__all__ = ["DATASETS", "DataBundle", "available_datasets", "create", "register_dataset"]
