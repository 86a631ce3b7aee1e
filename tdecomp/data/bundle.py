"""What a dataset hands the trainer: splits, the task they define, and what models need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from ..tasks import Task


@dataclass
class DataBundle:
    """``train``/``test`` datasets, the :class:`~tdecomp.tasks.Task` they define, the keyword
    arguments the model factory needs (e.g. ``num_classes``, ``in_channels``; vocabulary sizes for
    text), and an optional ``collate_fn`` for the DataLoader.

    ``val``: the validation split carved out of the training data (``val_fraction``,
    :func:`tdecomp.data.subset.split_training`), or None. ``train_for_eval``: for datasets whose
    training examples are drawn anew on each access (augmentation, masking), a function building
    the same examples, index for index, as evaluation reads them; the validation split reads them
    there.
    """

    train: Dataset
    test: Dataset
    task: Task
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable | None = None
    on_device: bool = False  # examples already on the training device: no pinned host memory
    val: Dataset | None = None
    train_for_eval: Callable[[], Dataset] | None = None
