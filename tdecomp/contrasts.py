"""Contrasts between methods: linear combinations of method rows, evaluated per seed.

``"SI+FD - kaiming+WD"`` is the difference of two methods; ``"(SI+FD - SI+WD) - (kaiming+FD - kaiming+WD)"``
an interaction (does FD help SI more than it helps the baseline init?); ``"0.5 * (SI+WD + SI+FD - kaiming+WD
- kaiming+FD)"`` a main effect (SI's gain averaged over both regularizers). Operators ``-``, ``+`` and ``*``
stand between spaces, so labels keep their own ``+`` and ``-`` (``SI+FD-norebal``); a number before ``*``
scales the term after it. A contrast's weights sum
to 0: it compares methods, it does not estimate a level. Per seed s the contrast's value is
Σ_m w_m · x_{m,s} over the seeds every method of the contrast ran.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


@dataclass(frozen=True)
class Contrast:
    """A contrast as written (``text``, whitespace normalized) and its weight per method label."""

    text: str
    weights: dict[str, float]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.weights)


def parse_contrast(text: str) -> Contrast:
    """``"A - B"``, ``"(A - B) - (C - D)"``, … → :class:`Contrast`; ``ValueError`` naming the problem."""
    tokens = _TOKEN.findall(text)
    position = 0

    def fail(why: str) -> ValueError:
        return ValueError(f"contrast {text!r}: {why}; write e.g. \"SI+FD - kaiming+WD\" or "
                          "\"(SI+FD - SI+WD) - (kaiming+FD - kaiming+WD)\" (spaces around the - and + "
                          "between methods)")

    def expression() -> dict[str, float]:
        nonlocal position
        weights = term()
        while position < len(tokens) and tokens[position] in ("-", "+"):
            sign = -1.0 if tokens[position] == "-" else 1.0
            position += 1
            for label, w in term().items():
                weights[label] = weights.get(label, 0.0) + sign * w
        return weights

    def term() -> dict[str, float]:
        nonlocal position
        if position == len(tokens):
            raise fail("it ends where a method or '(' is expected")
        token = tokens[position]
        position += 1
        if position < len(tokens) and tokens[position] == "*":
            try:
                factor = float(token)
            except ValueError:
                raise fail(f"{token!r} before '*' is not a number") from None
            position += 1
            return {label: factor * w for label, w in term().items()}
        if token == "(":
            inner = expression()
            if position == len(tokens) or tokens[position] != ")":
                raise fail("a '(' is not closed")
            position += 1
            return inner
        if token in (")", "-", "+", "*"):
            raise fail(f"{token!r} where a method or '(' is expected")
        return {token: 1.0}

    weights = expression()
    if position != len(tokens):
        raise fail(f"unexpected {tokens[position]!r}")
    weights = {label: w for label, w in weights.items() if w != 0}
    if not weights or not math.isclose(sum(weights.values()), 0.0, abs_tol=1e-12):
        raise fail("its method weights must sum to 0 (a contrast compares methods)")
    return Contrast(" ".join(text.split()), weights)


def versus(methods: Sequence[str], baseline: str) -> list[Contrast]:
    """``M - baseline`` for every method ``M`` other than ``baseline`` (what ``--paired-vs`` asks)."""
    return [parse_contrast(f"{m} - {baseline}") for m in methods if m != baseline]


def per_seed(contrast: Contrast, values: Mapping[str, Mapping[int, float]]) -> dict[int, float]:
    """The contrast's value per seed, over the seeds every one of its methods has in ``values``
    (method label → seed → value); a method absent from ``values`` leaves no seed."""
    seeds = set.intersection(*(set(values.get(m, {})) for m in contrast.methods))
    return {s: math.fsum(w * values[m][s] for m, w in contrast.weights.items()) for s in sorted(seeds)}
