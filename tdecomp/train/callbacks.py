"""Trainer callbacks: how analysis tools observe training without the trainer knowing them.

A callback subclasses :class:`Callback` and overrides any hook. Hooks receive the
:class:`~tdecomp.train.trainer.Trainer`, whose public attributes are the contract:
``model`` (unwrapped from DDP), ``optimizer``, ``scheduler``, ``config``, ``out_dir``
(``pathlib.Path``), ``device``, ``epoch`` (0-based, current), ``global_step`` (optimizer steps
done so far), ``is_main`` (rank 0 in distributed runs), ``steps_per_epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

    from .trainer import Trainer


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

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_before_optimizer_step(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        """``record`` is the metrics.jsonl record just written for this epoch."""

    def on_train_end(self, trainer: Trainer, summary: dict) -> None: ...

    def state_dict(self) -> dict:
        """Saved in the trainer's checkpoint so a resumed run continues the callback's state."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...
