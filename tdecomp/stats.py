"""Statistics over seeds: estimates with Student-t intervals, paired tests and multiplicity adjustment.

For values x_1 … x_n (one per seed) the interval is mean ± t_{1−α/2, n−1} · s / √n with s the sample
standard deviation (n − 1 in the denominator). For paired comparisons the same interval is taken over
the per-seed differences d_s = x_s − y_s of the seeds both sides ran, which removes the seed-to-seed
variation the two share (same data order and initialization draw).

A paired contrast is tested two ways: the paired t-test (t = d̄ / (s_d/√n), two-sided p from Student's
t with n − 1 degrees of freedom) and, for n ≤ :data:`PERMUTATION_MAX_N`, the exact sign-flip
permutation test (under H0 each d_s is as likely to be −d_s: p = #{ε ∈ {±1}ⁿ : |Σ ε_s d_s| ≥ |Σ d_s|} / 2ⁿ),
which does not assume normal differences. A table of m contrasts adjusts its p-values for
multiplicity (:func:`adjust`): Holm's step-down (family-wise error) or Benjamini–Hochberg's step-up
(false discovery rate).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._validation import check_choice

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # the level an adjusted p-value must fall below for a contrast to be resolved
PERMUTATION_MAX_N = 10  # 2^10 sign flips: exact and instant; above, only the t-test
ADJUSTMENTS = ("holm", "bh", "none")


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
        """True when the interval excludes 0 (a difference that the seeds resolve, before any adjustment)."""
        return self.low is not None and (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class PairedTest:
    """A paired contrast over seeds: the :class:`Estimate` of the mean difference, the paired-t
    two-sided p-value (``None`` for n = 1) and the exact sign-flip p-value (``None`` for n > 10)."""

    estimate: Estimate
    p: float | None
    p_permutation: float | None


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


def t_test_p(differences: Sequence[float]) -> float | None:
    """Two-sided p-value of the one-sample t-test of mean 0 on ``differences`` (= the paired t-test):
    2·P(T_{n−1} ≥ |d̄|/(s/√n)). ``None`` for n < 2; with s = 0 the test is degenerate: 1 if d̄ = 0, else 0."""
    from scipy.special import stdtr

    n = len(differences)
    if n < 2:
        return None
    mean, std = statistics.fmean(differences), statistics.stdev(differences)
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    t = mean / (std / math.sqrt(n))
    return float(2 * stdtr(n - 1, -abs(t)))


def sign_flip_p(differences: Sequence[float], max_n: int = PERMUTATION_MAX_N) -> float | None:
    """Exact two-sided sign-flip permutation p-value of mean 0: the fraction of the 2ⁿ sign vectors ε
    with |Σ ε_s d_s| ≥ |Σ d_s| (the observed one included, so p ≥ 2/2ⁿ unless all d_s = 0).
    ``None`` for n > ``max_n`` (2ⁿ grows too fast) or n = 0."""
    n = len(differences)
    if n == 0 or n > max_n:
        return None
    observed = abs(math.fsum(differences))
    # sums that equal the observed one up to rounding count as "at least as extreme"
    tolerance = 1e-9 * max(math.fsum(map(abs, differences)), 1e-300)
    extreme = sum(abs(math.fsum(e * d for e, d in zip(signs, differences))) >= observed - tolerance
                  for signs in itertools.product((1, -1), repeat=n))
    return extreme / 2**n


def paired_test(differences: Sequence[float], confidence: float = CONFIDENCE) -> PairedTest:
    """:func:`estimate`, :func:`t_test_p` and :func:`sign_flip_p` of per-seed ``differences``."""
    return PairedTest(estimate(differences, confidence), t_test_p(differences), sign_flip_p(differences))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: with p_(1) ≤ … ≤ p_(m), adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))
    (the running max makes it monotone in p); controls the family-wise error rate."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg's step-up adjustment: adjusted p_(i) = min_{j ≥ i} min(1, m·p_(j)/j)
    (the running min from the largest p makes it monotone); controls the false discovery rate."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted, running = [0.0] * m, 1.0
    for k, i in enumerate(order):
        running = min(running, m * p_values[i] / (m - k))
        adjusted[i] = running
    return adjusted


def adjust(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """``p_values`` adjusted for multiplicity by ``method`` (one of :data:`ADJUSTMENTS`); the family is the
    p-values that are not ``None`` (a contrast with one pair has no test), which stay ``None``."""
    check_choice("adjust", method, ADJUSTMENTS)
    tested = [i for i, p in enumerate(p_values) if p is not None]
    family = [p_values[i] for i in tested]
    adjusted = {"holm": holm, "bh": benjamini_hochberg, "none": list}[method](family)
    out: list[float | None] = [None] * len(p_values)
    for i, p in zip(tested, adjusted):
        out[i] = p
    return out
