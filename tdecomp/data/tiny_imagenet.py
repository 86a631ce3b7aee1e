"""Tiny-ImageNet-200 from the extracted release on disk (no download: the archive is 237 MB)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..tasks import ClassificationTask
from .bundle import DataBundle
from .cifar import retransformed
from .registry import register_dataset

MEAN, STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)


class AnnotatedImages(Dataset):
    """The release's ``val/``: ``images/*.JPEG`` labelled by ``val_annotations.txt`` (file, wnid, …)."""

    def __init__(self, folder: Path, class_to_idx: dict[str, int], transform) -> None:
        from torchvision.datasets.folder import default_loader

        self.loader, self.transform = default_loader, transform
        lines = (folder / "val_annotations.txt").read_text().splitlines()
        self.samples = [
            (folder / "images" / parts[0], class_to_idx[parts[1]])
            for parts in (line.split("\t") for line in lines if line.strip())
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(self.loader(path)), label


@register_dataset("tiny-imagenet")
def tiny_imagenet(root: str = "data", augment: bool = True, **_: Any) -> DataBundle:
    """(3, 64, 64) images, 200 classes, from ``root/tiny-imagenet-200/{train,val}``.

    ``train/<wnid>/images/*.JPEG`` is read with ``ImageFolder``; ``val/`` either has the same
    class-folder layout or the release's ``images/`` + ``val_annotations.txt``.
    """
    from torchvision import datasets, transforms

    base = Path(root) / "tiny-imagenet-200"
    if not (base / "train").is_dir() or not (base / "val").is_dir():
        raise FileNotFoundError(
            f"Tiny-ImageNet not found: expected {base}/train/<wnid>/images/*.JPEG and {base}/val/ "
            "(download http://cs231n.stanford.edu/tiny-imagenet-200.zip and extract it under data_dir)"
        )
    normalize = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    train_tf = [transforms.RandomCrop(64, padding=8), transforms.RandomHorizontalFlip()] if augment else []
    train = datasets.ImageFolder(base / "train", transform=transforms.Compose(train_tf + normalize))
    test_tf = transforms.Compose(normalize)
    if (base / "val" / "val_annotations.txt").is_file():
        test: Dataset = AnnotatedImages(base / "val", train.class_to_idx, test_tf)
    else:
        test = datasets.ImageFolder(base / "val", transform=test_tf)
    return DataBundle(
        train=train,
        train_for_eval=partial(retransformed, train, test_tf),
        test=test,
        task=ClassificationTask(),
        model_kwargs={"num_classes": len(train.classes), "in_channels": 3},
    )
