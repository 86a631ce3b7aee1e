"""The callbacks that training config keys switch on, registered with the trainer on import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tdecomp.train.callbacks import Callback, register_config_callbacks

from .dynamics import DynamicsTracker
from .norm_matching import NormMatching

if TYPE_CHECKING:
    from tdecomp.train.trainer import Trainer


@register_config_callbacks
def analysis_callbacks(trainer: Trainer) -> list[Callback]:
    """``norm_match`` → :class:`NormMatching`, ``track_every > 0`` → :class:`DynamicsTracker`.

    ``norm_match`` comes first so that the tracker records the rescaled weights.
    """
    config, found = trainer.config, []
    if config.norm_match:
        found.append(NormMatching(trainer.model, config.norm_match))
    if config.track_every > 0:
        found.append(DynamicsTracker(trainer.model, trainer.optimizer, config.track_every, trainer.out_dir))
    return found
