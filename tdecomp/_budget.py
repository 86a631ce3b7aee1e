"""Rank allocation to a parameter budget: one mechanism for a single layer and a whole model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Choice = TypeVar("Choice")


def allocate(
    ranks_at: Sequence[Callable[[float], Choice]],
    cost: Callable[[int, Choice], int],
    target: float,
    *,
    max_scale: float = 1e4,
) -> list[Choice]:
    """Per-unit ranks at a common rank scale whose summed ``cost`` is closest to ``target``.

    ``ranks_at[i](s)`` gives unit i's ranks at scale ``s`` (non-decreasing in ``s``) and
    ``cost(i, ranks)`` their parameter count. Ranks are integers, so the total is a step
    function of ``s``: we bisect the step edge s_lo < s_hi around ``target`` (as the paper's
    ``make.py`` bisects its rank scale), then move single units from their s_lo to their s_hi
    ranks, largest change first, while that brings the total closer — so a model whose
    same-shaped layers all step together still lands near the budget. An unreachable
    ``target`` gives the nearest end of the range.
    """

    def total(scale: float) -> int:
        return sum(cost(i, f(scale)) for i, f in enumerate(ranks_at))

    lo, hi = 0.0, 1.0
    while total(hi) < target and hi < max_scale:
        lo, hi = hi, hi * 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if total(mid) < target:
            lo = mid
        else:
            hi = mid
    chosen = [f(lo) for f in ranks_at]
    upper = [f(hi) for f in ranks_at]
    spent = sum(cost(i, c) for i, c in enumerate(chosen))
    deltas = sorted(
        ((cost(i, upper[i]) - cost(i, chosen[i]), i) for i in range(len(chosen))), reverse=True
    )
    for delta, i in deltas:
        if delta > 0 and abs(spent + delta - target) < abs(spent - target):
            chosen[i], spent = upper[i], spent + delta
    return chosen
