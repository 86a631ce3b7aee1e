"""Paired tests and multiplicity adjustment against independent oracles: scipy's paired t-test, a
brute-force enumeration of sign flips, and Holm / Benjamini–Hochberg adjusted p-values computed by hand."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import scipy.stats

from tdecomp.stats import adjust, benjamini_hochberg, holm, paired_test, sign_flip_p, t_test_p

# p-values in no particular order; sorted: 0.005 (#3), 0.01 (#0), 0.035 (#2), 0.04 (#1), 0.2 (#4), m = 5
P_VALUES = [0.01, 0.04, 0.035, 0.005, 0.20]
# Holm: (m − j + 1)·p_(j) = 5·0.005, 4·0.01, 3·0.035, 2·0.04, 1·0.2 = 0.025, 0.04, 0.105, 0.08, 0.2;
# the running max lifts 0.08 to 0.105 (monotone in p)
HOLM = [0.04, 0.105, 0.105, 0.025, 0.20]
# BH: m·p_(j)/j = 0.025, 0.025, 0.058333, 0.05, 0.2; the running min from the top lowers 0.058333 to 0.05
BH = [0.025, 0.05, 0.05, 0.025, 0.20]


def test_holm_and_bh_against_hand_computations():
    assert holm(P_VALUES) == pytest.approx(HOLM, rel=1e-12)
    assert benjamini_hochberg(P_VALUES) == pytest.approx(BH, rel=1e-12)
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # 2·0.6 capped at 1, and 0.7 lifted to it
    assert benjamini_hochberg([0.6, 0.7]) == pytest.approx([0.7, 0.7])  # min(2·0.6/1, 0.7)
    assert holm([]) == [] and benjamini_hochberg([]) == []


def test_bh_matches_scipy_false_discovery_control():
    rng = np.random.default_rng(0)
    for m in (1, 3, 8, 20):
        p = rng.uniform(0, 0.2, m).tolist()
        assert benjamini_hochberg(p) == pytest.approx(scipy.stats.false_discovery_control(p, method="bh").tolist())


def test_adjust_skips_untested_contrasts_and_rejects_unknown_methods():
    assert adjust([0.01, None, 0.04, 0.035, 0.005, 0.20], "holm") == pytest.approx(
        [HOLM[0], None, *HOLM[1:]])
    assert adjust(P_VALUES, "bh") == pytest.approx(BH)
    assert adjust([0.01, None], "none") == [0.01, None]
    with pytest.raises(ValueError, match="adjust='bonferoni'"):
        adjust(P_VALUES, "bonferoni")


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_paired_t_p_is_scipys_ttest_rel(n):
    rng = random.Random(n)
    a = [rng.gauss(90, 2) for _ in range(n)]
    b = [x - rng.gauss(0.8, 1.5) for x in a]
    expected = scipy.stats.ttest_rel(a, b).pvalue
    assert t_test_p([x - y for x, y in zip(a, b)]) == pytest.approx(expected, rel=1e-10)
    assert t_test_p([1.0]) is None


def _brute_force_sign_flip(d: list[float]) -> float:
    """Every sign vector of {−1, +1}ⁿ, the statistic |mean|, counted against the observed one."""
    observed = abs(np.mean(d))
    flips = [abs(np.mean(np.array(signs) * d)) for signs in itertools.product([-1.0, 1.0], repeat=len(d))]
    return sum(f >= observed - 1e-12 for f in flips) / len(flips)


def test_sign_flip_p_against_brute_force_enumeration():
    rng = random.Random(5)
    cases = [[rng.gauss(0.5, 1.0) for _ in range(5)] for _ in range(20)]
    cases += [[1.0, -1.0, 2.0, 3.0, 0.5], [0.5, 0.5, -0.5, 0.5, 0.5], [1.0, 2.0, 3.0, 4.0, -10.0]]
    for d in cases:
        assert sign_flip_p(d) == pytest.approx(_brute_force_sign_flip(d), abs=1e-15), d


def test_sign_flip_known_cases():
    assert sign_flip_p([0.3, 1.2, 0.1, 2.0, 0.7]) == 2 / 32  # only all + and all − reach |Σd|
    assert sign_flip_p([0.0] * 4) == 1.0
    assert sign_flip_p([1.0] * 10) == 2 / 1024 and sign_flip_p([1.0] * 11) is None


def test_paired_test_bundles_estimate_and_both_p_values():
    d = [1.0, 2.0, 0.5, 1.5]
    result = paired_test(d)
    assert result.estimate.n == 4 and result.estimate.mean == pytest.approx(1.25)
    assert result.p == pytest.approx(scipy.stats.ttest_1samp(d, 0.0).pvalue)
    assert result.p_permutation == 2 / 16
    one = paired_test([2.0])
    assert one.p is None and one.p_permutation == 1.0 and one.estimate.low is None
