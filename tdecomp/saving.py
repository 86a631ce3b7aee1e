"""``tdecomp.save`` / ``tdecomp.load``: a factorized model's checkpoint that rebuilds it on its own.

:func:`save` writes ``{"plan": …, "model": state_dict}`` (plain containers: ``torch.load(…,
weights_only=True)`` reads it; the trainer's ``last.pt`` holds the same two entries). :func:`load`
builds the dense model with ``model_fn``, applies the plan (:mod:`tdecomp.plan`) with shape-only
surgery (``init="random"``: it draws, no decomposition), then loads the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .plan import as_plan, plan_of, plan_to_dict
from .surgery import factorize_model

PLAN, MODEL = "plan", "model"  # the checkpoint's entries (the trainer's checkpoints use the same keys)


def checkpoint_entries(model: nn.Module) -> dict[str, dict]:
    """``{"plan": …, "model": state_dict}``: what a checkpoint needs to rebuild ``model`` with :func:`load`."""
    return {PLAN: plan_to_dict(plan_of(model)), MODEL: model.state_dict()}


def save(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s plan and ``state_dict`` to ``path`` (``torch.save``), for :func:`load`."""
    torch.save(checkpoint_entries(model), path)


def load(path: str | Path, model_fn: Callable[[], nn.Module], map_location: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a factorized model from a :func:`save` file, a trainer checkpoint or a run folder (its
    ``last.pt``): ``model_fn()`` builds the dense model, the stored plan replaces its modules
    (shape-only, ``init="random"``), then the stored weights are loaded (strictly). Returns the model."""
    from .train.checkpoint import read_checkpoint  # here: `import tdecomp` need not import the trainer

    state = read_checkpoint(path, map_location)
    if PLAN not in state:
        raise ValueError(f"{path} holds no plan (a plain state_dict, or written before plans were stored); "
                         "factorize the model as it was, then call load_state_dict")
    model = model_fn()
    plan = as_plan(state[PLAN])
    if plan:
        factorize_model(model, plan=plan, init="random", progress=False)
    model.load_state_dict(state[MODEL])
    return model


__all__ = ["MODEL", "PLAN", "checkpoint_entries", "load", "save"]
