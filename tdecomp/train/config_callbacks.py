"""The callbacks that training config keys switch on, built explicitly (no registration by import).

The analysis package is imported here, lazily, only when a key asks for one of its callbacks:
``import tdecomp`` and a plain training run never import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .callbacks import Callback, TrainingState

if TYPE_CHECKING:
    from ..config import TrainConfig


def config_callbacks(config: TrainConfig, state: TrainingState) -> list[Callback]:
    """``norm_match`` → :class:`~tdecomp.analysis.norm_matching.NormMatching`, ``track_every > 0`` →
    :class:`~tdecomp.analysis.dynamics.DynamicsTracker` (writing to ``state.out_dir``).

    ``norm_match`` comes first so that the tracker records the rescaled weights.
    """
    found: list[Callback] = []
    if config.norm_match:
        from tdecomp.analysis.norm_matching import NormMatching

        found.append(NormMatching(state.model, config.norm_match))
    if config.track_every > 0:
        from tdecomp.analysis.dynamics import DynamicsTracker

        found.append(DynamicsTracker(state.model, state.optimizer, config.track_every, state.out_dir))
    return found
