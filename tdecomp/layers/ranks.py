"""Ranks as users give them (a parameter ratio, a :class:`RankScale`, an int, a tuple) turned into a
family's explicit ranks, clamped to what the family can use."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._budget import allocate
from .registry import FAMILIES
from .spec import DenseSpec

if TYPE_CHECKING:
    from .base import FactorizedLayer


class RankScale(float):
    """A rank given as the family's rank scale s rather than a parameter ratio, e.g.
    ``factorize(conv, "lowrank", RankScale(1/3), rank_rule="paper")`` has r = round(c_out·k_h/3)
    as microsoft/fnl_paper frob.py:143 does."""

    __slots__ = ()


Rank = int | float | Sequence[int]


def as_rank(rank: Any) -> Any:
    """``rank`` with numbers of other types as Python's: a 0-d tensor or a numpy scalar (any
    ``numbers.Integral`` → int, ``numbers.Real`` → float; a :class:`RankScale` and ``bool`` as they
    are), tuple entries likewise; anything else unchanged, for :func:`resolve_rank` to judge."""
    if isinstance(rank, torch.Tensor) and rank.ndim == 0:
        rank = rank.item()
    if isinstance(rank, (bool, RankScale)):
        return rank
    if isinstance(rank, numbers.Integral):
        return int(rank)
    if isinstance(rank, numbers.Real):
        return float(rank)
    if isinstance(rank, Sequence) and not isinstance(rank, str):
        return tuple(r if isinstance(r, bool) or not isinstance(r, numbers.Integral) else int(r) for r in rank)
    return rank


def resolve_rank(cls: type[FactorizedLayer], spec: DenseSpec, rank: Rank, **options: Any) -> tuple[int, ...]:
    """Turn a user ``rank`` into explicit ranks of family ``cls`` on a layer ``spec``.

    - ``float``: target ratio of the factorized weight's parameters to the dense weight's
      (as in tensorly-torch); the family's rank scale is bisected to the closest count.
    - :class:`RankScale` ``s``: the family's ranks at rank scale s directly (unclamped).
    - ``int``: the family's single rank (see each family).
    - tuple of ints: one entry per ``rank_names``.
    Ranks above ``max_ranks`` carry no extra expressiveness and are clamped with a warning. Numpy
    scalars and 0-d tensors count as the Python numbers they hold (:func:`as_rank`).
    """
    rank = as_rank(rank)
    if isinstance(rank, bool):
        raise TypeError(f"rank must be a float, an int or a tuple of ints, got {rank!r}")
    if isinstance(rank, float):
        if isinstance(rank, RankScale):
            if not math.isfinite(rank) or rank <= 0:
                raise ValueError(f"rank scale must be a positive number, got {float(rank)!r}")
            return cls._ranks_at_scale(spec, float(rank), **options)
        check_ratio(cls, rank)
        (ranks,) = allocate(
            [lambda s: cls._ranks_at_scale(spec, s, **options)],
            lambda _, r: cls.count_params(spec, r, **options),
            rank * spec.weight_numel,
        )
        return ranks
    if isinstance(rank, int):
        if rank <= 0:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        ranks = cls._ranks_from_int(spec, rank, **options)
    elif isinstance(rank, Sequence) and not isinstance(rank, str):
        names = cls.rank_names(spec)
        if len(rank) != len(names):
            raise ValueError(
                f"rank for family {cls.family!r} on a {spec.kind} layer must have "
                f"{len(names)} entries {names}, got {len(rank)}: {tuple(rank)!r}"
            )
        if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rank):
            raise ValueError(f"rank entries must be positive ints, got {tuple(rank)!r}")
        ranks = tuple(rank)
    else:
        raise TypeError(f"rank must be a float, an int or a tuple of ints, got {rank!r}")
    return clamp(cls, spec, ranks, warn=True)


def clamp(cls: type[FactorizedLayer], spec: DenseSpec, ranks: Sequence[int], warn: bool = False) -> tuple[int, ...]:
    """``ranks`` limited to [1, ``max_ranks``] and made feasible (``_feasible``), warning if ``warn``."""
    limits = cls.max_ranks(spec)
    clamped = cls._feasible(spec, tuple(r if m is None else max(1, min(r, m)) for r, m in zip(ranks, limits)))
    if warn and clamped != tuple(ranks):
        warnings.warn(
            f"{cls.family} rank {tuple(ranks)} exceeds the maximum {limits} for weight shape "
            f"{spec.weight_shape}; using {clamped}",
            stacklevel=4,
        )
    return clamped


def check_ratio(cls: type[FactorizedLayer], ratio: float) -> None:
    """``ValueError`` unless ``ratio`` is a parameter ratio family ``cls`` can hold: finite, > 0,
    and ≤ 1 unless the family has an overcomplete form (otherwise its layers would be larger
    than the dense ones and be reported at the dense size)."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"rank must be a positive parameter ratio, got {ratio!r}")
    if ratio > 1 and not cls.has_overcomplete_form:
        overcomplete = [n for n in FAMILIES.names() if FAMILIES.get(n).has_overcomplete_form]
        raise ValueError(f"rank={ratio} exceeds the dense layer's parameters, and family {cls.family!r} has no "
                         f"overcomplete form; use a ratio ≤ 1 (ratios > 1: {', '.join(overcomplete)})")
