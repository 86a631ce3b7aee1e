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
    text), and an optional ``collate_fn`` for the DataLoader."""

    train: Dataset
    test: Dataset
    task: Task
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable | None = None
