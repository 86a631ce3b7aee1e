"""Trainer callbacks: how analysis tools observe training without the trainer knowing them.

A callback subclasses :class:`Callback` and overrides any hook. Hooks receive the
:class:`~tdecomp.train.trainer.Trainer`, whose public attributes are the contract:
``model`` (unwrapped from DDP), ``optimizer``, ``scheduler``, ``config``, ``out_dir``
(``pathlib.Path``), ``device``, ``epoch`` (0-based, current), ``global_step`` (optimizer steps
done so far), ``is_main`` (rank 0 in distributed runs), ``steps_per_epoch``, ``total_steps`` and
``total_epochs`` (the run's length: ``epochs``, or ``max_steps`` if it comes first).

Config keys that switch callbacks on (``track_every``, ``norm_match``) are served by builders that
the analysis package registers with :func:`register_config_callbacks` when it is imported
(``import tdecomp`` does), so the trainer never imports analysis code.
"""

from __future__ import annotations

from collections.abc import Callable
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


ConfigCallbacks = Callable[["Trainer"], list[Callback]]
_CONFIG_CALLBACKS: list[ConfigCallbacks] = []


def register_config_callbacks(builder: ConfigCallbacks) -> ConfigCallbacks:
    """Register ``builder(trainer) -> [callbacks the trainer's config switches on]`` (a decorator)."""
    _CONFIG_CALLBACKS.append(builder)
    return builder


def config_callbacks(trainer: Trainer) -> list[Callback]:
    """The callbacks every registered builder derives from ``trainer.config``, in registration order."""
    return [cb for builder in _CONFIG_CALLBACKS for cb in builder(trainer)]
