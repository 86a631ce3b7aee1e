"""The trainer on objects it is given (``Trainer.from_objects``, ``tdecomp.fit``): the config such a
run takes, and what the trainer reads from a user's model and loaders."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from ..config import OBJECT_KEYS, TrainConfig, default_values
from ..surgery import summarize


def objects_config(config: TrainConfig | None) -> TrainConfig:
    """``config`` (default: the defaults) for a run on given objects: ``model`` and ``data`` null;
    ``ValueError`` naming any other key of :data:`~tdecomp.config.OBJECT_KEYS` set away from its
    default (it would be ignored: set it on your loaders or model instead)."""
    config = config or TrainConfig()
    defaults = default_values()
    ignored = [k for k in OBJECT_KEYS if k not in ("model", "data") and getattr(config, k) != defaults[k]]
    ignored += [k for k in ("model", "data") if getattr(config, k) not in (None, defaults[k])]
    if ignored:
        raise ValueError(f"{', '.join(f'{k}={getattr(config, k)!r}' for k in ignored)} build the registry's data "
                         "and model, which you give yourself here: set them on your model and loaders instead")
    return dataclasses.replace(config, model=None, data=None)


def epoch_sampler(loader: DataLoader) -> Any:
    """The sampler of ``loader`` that takes ``set_epoch`` (a ``DistributedSampler``, token batches), or None."""
    for sampler in (loader.batch_sampler, loader.sampler):
        if callable(getattr(sampler, "set_epoch", None)):
            return sampler
    return None


def dense_parameter_count(model: nn.Module) -> int:
    """Parameters of ``model`` with every factorized layer counted at its dense layer's size."""
    report = summarize(model)
    return sum(p.numel() for p in model.parameters()) + report.dense_params - report.params
