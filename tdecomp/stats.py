"""Summary statistics over seeds: mean, sample standard deviation, n and a Student-t confidence interval.

For values x_1 … x_n (one per seed) the interval is mean ± t_{1−α/2, n−1} · s / √n with s the sample
standard deviation (n − 1 in the denominator). For paired comparisons the same interval is taken over
the per-seed differences d_s = x_s − y_s of the seeds both sides ran, which removes the seed-to-seed
variation the two share (same data order and initialization draw).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """``mean`` of ``n`` values; ``std``, ``low`` and ``high`` are ``None`` when n = 1 (no spread to estimate)."""

    mean: float
    n: int
    std: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0 (a difference that the seeds resolve)."""
        return self.low is not None and (self.low > 0 or self.high < 0)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean, sample std and the two-sided Student-t ``confidence`` interval of the mean of ``values``."""
    if not values:
        raise ValueError("cannot estimate a mean from no values")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Estimate(mean, 1)
    std = statistics.stdev(values)
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Estimate(mean, n, std, mean - half, mean + half)


def paired_difference(
    values: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> Estimate | None:
    """:func:`estimate` of ``values[s] − baseline[s]`` over the seeds ``s`` in both; ``None`` if none is shared."""
    seeds = sorted(set(values) & set(baseline))
    return estimate([values[s] - baseline[s] for s in seeds], confidence) if seeds else None
