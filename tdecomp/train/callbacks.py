"""Trainer callbacks: how analysis tools observe training without the trainer knowing them.

A callback subclasses :class:`Callback` and overrides any hook. Hooks receive the run's
:class:`TrainingState` — the whole contract, nothing else of the trainer: ``model`` (unwrapped
from DDP), ``optimizer``, ``device``, ``out_dir`` (``pathlib.Path``), ``is_main`` (rank 0 in
distributed runs), ``step`` (optimizer steps done so far), ``epoch`` (0-based, current),
``steps_per_epoch``, ``total_steps`` and ``total_epochs`` (the run's length: ``epochs``, or
``max_steps`` if it comes first), ``lr`` (the first parameter group's, now) and the loss scale
(``loss_scale()``, ``grads_scaled``) to read gradients by.

The callbacks that config keys switch on (``track_every``, ``norm_match``) are built by
:func:`tdecomp.train.config_callbacks.config_callbacks`, which the trainer calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


@dataclass
class TrainingState:
    """What callbacks see of a training run; the trainer keeps ``step`` and ``epoch`` current."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    out_dir: Path
    is_main: bool
    steps_per_epoch: int
    total_steps: int
    total_epochs: int
    # whether the gradients that on_before_optimizer_step sees are still multiplied by loss_scale()
    # (fp16 mixed precision, not yet unscaled for clipping)
    grads_scaled: bool = False
    step: int = 0
    epoch: int = 0
    read_loss_scale: Callable[[], float] = field(default=lambda: 1.0, repr=False)  # behind loss_scale()

    @property
    def lr(self) -> float:
        """The learning rate of the optimizer's first parameter group, now."""
        return self.optimizer.param_groups[0]["lr"]

    def loss_scale(self) -> float:
        """The factor the loss was multiplied by before backward (fp16's grad scaler; 1.0 without
        one). A host sync on CUDA: read it only when needed."""
        return self.read_loss_scale()


@dataclass(frozen=True)
class StepInfo:
    """What one optimizer step produced. ``loss`` is the objective incl. the FD term."""

    step: int  # global step number after this update (1-based)
    epoch: int
    loss: Tensor  # 0-d, on the device: float(info.loss) is a host sync
    lr: float  # learning rate of the first parameter group after the update


class Callback:
    """Base class with no-op hooks. Gradients of the step are still on the parameters in
    :meth:`on_before_optimizer_step` (after backward, before the update)."""

    def on_train_start(self, state: TrainingState) -> None: ...

    def on_before_optimizer_step(self, state: TrainingState) -> None: ...

    def on_step_end(self, state: TrainingState, info: StepInfo) -> None: ...

    def on_epoch_end(self, state: TrainingState, record: dict) -> None:
        """``record`` is the metrics.jsonl record just written for this epoch."""

    def on_train_end(self, state: TrainingState, summary: dict) -> None: ...

    def state_dict(self) -> dict:
        """Saved in the trainer's checkpoint so a resumed run continues the callback's state."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...
