"""The dense model a run starts from (``init_from``): the teacher of distillation fine-tuning and the
reference of compress's per-layer output errors."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import models
from ..config import TrainConfig
from .checkpoint import load_model_weights


def source_model(config: TrainConfig, model_kwargs: dict[str, Any], device: torch.device) -> nn.Module:
    """``config.model`` (``model_kwargs`` from the data, ``config.model_kwargs`` winning, as the trainer
    builds it) holding ``config.init_from``'s weights, on ``device``, in eval mode, without gradients."""
    model = models.create(config.model, **{**model_kwargs, **config.model_kwargs})
    model.load_state_dict(load_model_weights(config.init_from))
    return model.to(device).eval().requires_grad_(False)
