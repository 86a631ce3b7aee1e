"""scikit-learn's bundled 8×8 handwritten digits (1,797 real images): the embedded default."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from ..tasks import ClassificationTask
from .bundle import DataBundle
from .registry import register_dataset


@register_dataset("digits")
def digits(test_fraction: float = 0.2, split_seed: int = 0, **_: Any) -> DataBundle:
    """Images (1, 8, 8) standardized with the training split's mean/std; 10 classes.

    The stratified train/test split is fixed by ``split_seed`` (not the training ``seed``), so
    runs with different seeds are evaluated on the same 360 test images. No download, no augmentation.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=split_seed
    )
    mean, std = x_train.mean(), x_train.std()

    def to_dataset(images, labels) -> TensorDataset:
        images = torch.as_tensor((images - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return TensorDataset(images, torch.as_tensor(labels, dtype=torch.long))

    return DataBundle(
        train=to_dataset(x_train, y_train),
        test=to_dataset(x_test, y_test),
        task=ClassificationTask(),
        model_kwargs={"num_classes": 10, "in_channels": 1},
    )
