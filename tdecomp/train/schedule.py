"""Per-step learning-rate multipliers: warm-up, then step decay, cosine, inverse-sqrt or constant."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence


def lr_multiplier(
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
    warmup_factor: float | None = None,
) -> Callable[[int], float]:
    """``f(step)`` scaling the base lr at optimizer step ``step`` (0-based), for ``LambdaLR``.

    - warm-up: (step+1)/warmup_steps for the first ``warmup_steps`` steps, or the constant
      ``warmup_factor`` when given (microsoft/fnl_paper pytorch_resnet_cifar10/trainer.py:191-195
      and :254-256 run ResNet-56/110's first epoch at 0.1× lr; fairseq's inverse_sqrt with
      ``--warmup-init-lr`` = ``--lr`` is the constant 1);
    - ``step``: γ^(number of milestones, as fractions of ``total_steps``, already passed);
    - ``cosine``: ½(1 + cos(π·t)) with t the post-warm-up progress in [0, 1];
    - ``inverse_sqrt``: √(warmup_steps/step) (fairseq inverse_square_root_schedule.py:69-75);
    - ``constant``: 1.
    """
    bounds = sorted(round(m * total_steps) for m in milestones)

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps if warmup_factor is None else warmup_factor
        if kind == "step":
            return gamma ** bisect.bisect_right(bounds, step)
        if kind == "inverse_sqrt":
            return math.sqrt(warmup_steps / step) if step else 1.0
        if kind == "cosine":
            t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return f
