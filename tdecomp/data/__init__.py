"""Dataset factory: ``create(name, root=, download=, seed=, subset=, val_fraction=, val_seed=, **kwargs)``
→ :class:`DataBundle`.

Every factory builds a dataset's full training and test data from ``root``, ``download``,
``seed`` (ignoring what it does not need) plus its own options, which configs pass as
``data_kwargs``; :func:`create` then carves the validation split and the training subset out of
the training data (:mod:`tdecomp.data.subset`).
"""

# Importing the dataset files registers their names.
from . import cifar, digits, fake, mnist1d, text, tiny_imagenet, translation  # noqa: F401
from .bundle import DataBundle
from .registry import DATASETS, available_datasets, create, register_dataset

__all__ = ["DATASETS", "DataBundle", "available_datasets", "create", "register_dataset"]
