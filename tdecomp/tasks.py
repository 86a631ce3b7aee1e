"""Tasks: how a batch becomes a loss and how a model is evaluated.

The trainer is task-agnostic. A dataset (:class:`tdecomp.data.DataBundle`) carries its task;
classification lives here, sequence tasks (translation, masked LM) next to their data.
A batch arrives already on the trainer's device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Task(ABC):
    """One learning problem. ``metric`` names the headline evaluation number (``test_<metric>``)."""

    metric: str = "acc"

    @abstractmethod
    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        """Mean loss of the batch (a scalar to backprop) and additive counts for the epoch
        summary: ``{"loss_sum": Σ per-example loss, "correct": #correct, "count": #examples}``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Metrics on held-out batches: at least ``test_loss`` and ``test_acc``."""


class ClassificationTask(Task):
    """Cross-entropy on ``(inputs, labels)`` batches; accuracy in [0, 1]."""

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return loss, {
            "loss_sum": float(loss.detach()) * len(y),
            "correct": float((logits.detach().argmax(1) == y).sum()),
            "count": float(len(y)),
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        loss_sum = correct = count = 0.0
        for x, y in batches:
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
            count += len(y)
        return {"test_loss": loss_sum / max(count, 1), "test_acc": correct / max(count, 1)}
