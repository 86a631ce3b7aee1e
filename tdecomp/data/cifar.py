"""CIFAR-10/100 through ``torchvision.datasets`` with the standard augmentation."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import Any

from ..tasks import ClassificationTask
from .bundle import DataBundle
from .registry import register_dataset

# per-channel statistics of the training sets
STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _presence_checked(cls):
    """A torchvision CIFAR class whose per-file checks test presence instead of md5 sums.

    torchvision's md5 sums reject re-packed or subset batches (and the tiny CIFAR-format files
    our tests write); with ``md5=None`` its own ``check_integrity`` tests that the file exists.
    The downloaded archive is still verified against ``tgz_md5``.
    """
    return type(cls.__name__, (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


def retransformed(dataset: Any, transform: Any) -> Any:
    """A shallow copy of a torchvision dataset (examples shared) that reads them through ``transform``."""
    view = copy.copy(dataset)
    view.transform = transform
    return view


def cifar(
    num_classes: int,
    root: str = "data",
    download: bool = False,
    augment: bool = True,
    **_: Any,
) -> DataBundle:
    """CIFAR-``num_classes``: (3, 32, 32) images; train: pad-4 random crop + horizontal flip."""
    from torchvision import datasets, transforms

    cls = _presence_checked(datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100)
    folder = Path(root) / cls.base_folder
    if not download and not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-{num_classes} not found: expected the python-version batches in {folder} "
            f"({', '.join(n for n, _ in cls.train_list + cls.test_list)}); set download=true to "
            "fetch them or data_dir=PATH to the folder that contains them"
        )
    mean, std = STATS[num_classes]
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
    try:
        train = cls(root, train=True, download=download, transform=transforms.Compose(train_tf + normalize))
    except OSError as err:  # urllib's URLError when offline
        raise FileNotFoundError(
            f"CIFAR-{num_classes} could not be downloaded from {cls.url} ({getattr(err, 'reason', err)}); "
            f"fetch that file on a connected machine, extract {cls.filename} into {root} (giving {folder}), "
            "then rerun with download=false, or set data_dir=PATH to a folder that holds it"
        ) from None
    test = cls(root, train=False, download=False, transform=transforms.Compose(normalize))
    return DataBundle(
        train=train,
        train_for_eval=partial(retransformed, train, transforms.Compose(normalize)),
        test=test,
        task=ClassificationTask(),
        model_kwargs={"num_classes": num_classes, "in_channels": 3},
    )


register_dataset("cifar10")(partial(cifar, 10))
register_dataset("cifar100")(partial(cifar, 100))
