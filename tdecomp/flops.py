"""Forward FLOPs of a model, counted by ``torch.utils.flop_counter`` (not by a hand formula).

``FlopCounterMode`` counts the matrix products and convolutions PyTorch dispatches (2 FLOPs per
multiply-accumulate; elementwise ops, normalization and pooling are not counted), so a factorized
layer is counted as it actually runs — its factor convolutions, or the reconstruction of W and
the dense op where that is the layer's ``chosen_implementation``.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .surgery import collapse_model

if TYPE_CHECKING:
    from .tasks import Task

log = logging.getLogger("tdecomp")


@torch.no_grad()
def forward_flops(model: nn.Module, task: Task, batch: Any) -> float:
    """FLOPs of one eval-mode forward of ``model`` on ``batch``, per example the task counts.

    The forward is the task's own (``task.training_step``, run without gradients), so any model
    the trainer trains can be counted; the examples are its ``count`` (images, or target tokens
    for sequence tasks). Per-call work (e.g. building a Tucker layer's small kernel) is shared by
    the batch, so counts per example fall slightly with larger batches.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            _, stats = task.training_step(model, batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / max(stats["count"], 1.0)


def flop_summary(model: nn.Module, task: Task, batch: Any) -> dict[str, float]:
    """``flops`` (per example, :func:`forward_flops`), ``dense_flops`` (the same model with every
    factorized layer collapsed to its dense layer; NaN when one cannot be) and ``flop_ratio`` =
    flops / dense_flops."""
    flops = forward_flops(model, task, batch)
    try:
        dense = forward_flops(collapse_model(copy.deepcopy(model)), task, batch)
    except ValueError as err:  # attention whose per-head rank exceeds a dense head: no dense twin
        log.warning("tdecomp: no dense FLOP count (%s)", err)
        dense = float("nan")
    return {"flops": flops, "dense_flops": dense, "flop_ratio": flops / dense if dense else float("nan")}


__all__ = ["flop_summary", "forward_flops"]
