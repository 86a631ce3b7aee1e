"""Energy curves: how much of a dense weight's energy ‖W‖²_F each rank of one rank entry keeps.

Each family provides one curve per rank entry (``FactorizedLayer.energy_curves``), for the rank
allocation rules of :mod:`tdecomp.allocation` that read the trained weight.
"""

from __future__ import annotations

from bisect import bisect_left

import torch
from torch import Tensor


class EnergyCurve:
    """E(r) = Σ_{j≤r} g_j/‖W‖²_F, the fraction of a weight's energy that rank r of one entry keeps,
    for r = 1…``size`` (non-decreasing), from the gains g_j (squared singular values)."""

    def __init__(self, gains: Tensor, total: Tensor) -> None:
        self.kept = (gains.cumsum(0) / total).tolist()
        self.size = len(self.kept)

    @classmethod
    def of_unfolding(cls, matrix: Tensor, total: Tensor) -> EnergyCurve:
        """The curve of truncated SVDs of ``matrix``, a reshaping of W with ‖W‖²_F = ``total``: g_j = σ_j²."""
        return cls(torch.linalg.svdvals(matrix).square(), total)

    def first(self) -> float:
        """E(1) = σ₁²/‖W‖²_F, the inverse stable rank."""
        return self.kept[0]

    def smallest_rank(self, t: float) -> int:
        """min{r : E(r) ≥ t}, or ``size`` if no rank reaches ``t``."""
        return min(bisect_left(self.kept, t) + 1, self.size)
