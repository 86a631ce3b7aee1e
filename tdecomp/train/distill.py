"""Distillation fine-tuning: the dense source model teaches its compressed copy (``distill=T``).

:class:`DistillationTask` wraps a run's task: its loss becomes

    (1 − α)·L_task + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))

(Hinton, Vinyals & Dean 2015; T² keeps the soft term's gradients on the task loss's scale as T
grows), with z_s the student's outputs, z_t the teacher's on the same call, the KL over the last
dimension (the classes; the vocabulary of a sequence model, every position counting alike) and
averaged over the others. It hooks the student's forward to see the call's arguments, so it wraps
any task without knowing its batch format; the teacher runs in eval mode without gradients.
Evaluation is the wrapped task's. The config key ``distill`` makes the trainer wrap its data's task
(:func:`distillation_task`); FD and the rest of the objective apply as usual.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tasks import Task
from .source import source_model

if TYPE_CHECKING:
    from ..config import TrainConfig


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) over the last dimension, averaged over the others
    (in float32 at least: half-precision logits under autocast)."""
    dtype = torch.promote_types(student.dtype, torch.float32)
    target = F.log_softmax(teacher.detach().to(dtype) / temperature, -1)
    log_student = F.log_softmax(student.to(dtype) / temperature, -1)
    kl = (target.exp() * (target - log_student)).sum(-1)
    return temperature**2 * kl.mean()


class DistillationTask(Task):
    """``task`` with its training loss mixed with the distillation loss from ``teacher`` (module docstring):
    weight ``weight`` = α on the distillation term, temperature ``temperature`` = T."""

    def __init__(self, task: Task, teacher: nn.Module, temperature: float, weight: float) -> None:
        if temperature <= 0 or not 0 <= weight <= 1:
            raise ValueError(f"distillation needs temperature > 0 and weight in [0, 1], got {temperature}, {weight}")
        self.task, self.teacher, self.temperature, self.weight = task, teacher.eval(), temperature, weight
        self.metric = task.metric

    def training_step(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor | float]]:
        seen: dict[str, Any] = {}

        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            seen.update(args=args, kwargs=kwargs, output=output)

        handle = model.register_forward_hook(record, with_kwargs=True)
        try:
            loss, stats = self.task.training_step(model, batch)
        finally:
            handle.remove()
        with torch.no_grad():
            teacher = self.teacher(*seen["args"], **seen["kwargs"])
        soft = distillation_loss(seen["output"], teacher, self.temperature)
        return (1 - self.weight) * loss + self.weight * soft, stats

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        return self.task.evaluate(model, batches)


def distillation_task(task: Task, config: TrainConfig, model_kwargs: dict[str, Any], device: torch.device) -> Task:
    """``task``, wrapped in a :class:`DistillationTask` whose teacher is the dense ``init_from`` model when
    ``config.distill`` (the temperature) is > 0."""
    if config.distill <= 0:
        return task
    with torch.random.fork_rng(devices=[]):  # the student's draws (order, dropout) as without distillation
        teacher = source_model(config, model_kwargs, device)
    return DistillationTask(task, teacher, config.distill, config.distill_weight)


__all__ = ["DistillationTask", "distillation_loss", "distillation_task"]
