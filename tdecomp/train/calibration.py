"""Calibration data of a run: the training batches a data-aware factorization reads (``init=whitened``,
``allocation=whitened-energy|fisher``), and the next ones, held out, on which ``tdecomp compress``
reports per-layer output errors."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..calibration import Calibration, calibrate, data_needs
from ..config import TrainConfig
from ..data import DataBundle
from ..layers.spec import CONV_TYPES
from ..surgery import SkipRule, eligible_layers
from ..tasks import Task


def calibration_batches(data: DataBundle, config: TrainConfig) -> tuple[list[Any], list[Any]]:
    """2K batches (K = ``config.calibration_batches``) of ``config.batch_size`` training examples in an
    order drawn from ``config.seed`` (as evaluation reads them, :attr:`DataBundle.train_for_eval`, where
    examples are drawn anew on each access): the first K calibrate, the next K are held out."""
    dataset = data.train_for_eval() if data.train_for_eval is not None else data.train
    order = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=order,
                        collate_fn=data.collate_fn)
    k = config.calibration_batches
    batches = list(itertools.islice(loader, 2 * k))
    return batches[:k], batches[k:]


def task_calibration(model: nn.Module, task: Task, batches: list[Any], needs: frozenset[str],
                     layers: Iterable[str] | None = None) -> Calibration:
    """:func:`tdecomp.calibrate` of ``model``'s ``layers`` (default: every Linear/conv) on ``batches``, run
    through ``task``'s training step (any batch format), with the Fisher information of its loss if
    ``needs`` holds ``"fisher"``."""
    loss = (lambda m, batch: task.training_step(m, batch)[0]) if "fisher" in needs else None
    return calibrate(model, batches, layers=layers, forward=task.training_step, loss_fn=loss)


def config_calibration(config: TrainConfig, data: DataBundle, model: nn.Module, skip: SkipRule) -> Calibration | None:
    """The calibration that ``config.init`` and ``config.allocation`` read of the dense ``model``'s Linear and
    conv layers that factorizing with ``skip`` replaces, on its calibration batches; None when they read
    no data."""
    needs = data_needs(config.init, config.allocation)
    if not needs:
        return None
    layers = [n for n, m in eligible_layers(model, skip, config.targets) if isinstance(m, (nn.Linear, *CONV_TYPES))]
    return task_calibration(model, data.task, calibration_batches(data, config)[0], needs, layers)
