"""``data=fake``: deterministic random images and labels made once on the device, for throughput
measurements without an input pipeline (as torchvision's ``FakeData``, but batched and on the GPU).

Options (``data_kwargs``): ``shape`` (one example, default [3, 32, 32]), ``num_classes`` (10),
``num_samples`` (training examples, 20,000), ``test_samples`` (1,000), ``device`` ("auto": CUDA
when available, as the trainer's default). Inputs are N(0, 1), labels uniform; the same ``seed``
gives the same tensors on the same device. The loader fetches a whole batch with one index op
(``__getitems__``), so no workers and no per-example Python run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..tasks import ClassificationTask
from .bundle import DataBundle
from .registry import register_dataset


class DeviceTensors(Dataset):
    """Examples ``(inputs[i], labels[i])`` of tensors already on their device."""

    def __init__(self, inputs: Tensor, labels: Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """A whole batch: one gather on the device (the DataLoader's batched fetch)."""
        idx = torch.as_tensor(indices, device=self.labels.device)
        return self.inputs[idx], self.labels[idx]


def _batch_as_is(batch: Any) -> Any:
    return batch


def _random_split(n: int, shape: tuple[int, ...], num_classes: int, seed: int, device: torch.device) -> DeviceTensors:
    generator = torch.Generator(device).manual_seed(seed)
    inputs = torch.randn((n, *shape), generator=generator, device=device)
    labels = torch.randint(num_classes, (n,), generator=generator, device=device)
    return DeviceTensors(inputs, labels)


@register_dataset("fake")
def fake(
    seed: int = 0,
    shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    num_samples: int = 20_000,
    test_samples: int = 1_000,
    device: str = "auto",
    **_: Any,
) -> DataBundle:
    """Random ``shape`` inputs with ``num_classes`` labels, made on ``device``."""
    shape = tuple(shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"data_kwargs.shape must be a list of positive ints, got {list(shape)!r}")
    for name, value in (("num_classes", num_classes), ("num_samples", num_samples), ("test_samples", test_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"data_kwargs.{name} must be a positive int, got {value!r}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    return DataBundle(
        train=_random_split(num_samples, shape, num_classes, seed, dev),
        test=_random_split(test_samples, shape, num_classes, seed + 1, dev),
        task=ClassificationTask(),
        model_kwargs={"num_classes": num_classes, "in_channels": shape[0]},
        collate_fn=_batch_as_is,
        on_device=True,
    )
