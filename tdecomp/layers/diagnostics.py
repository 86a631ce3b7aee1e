"""What the dynamics tracker (``analysis/dynamics.py``) reads from a factorized layer: ⟨W, W'⟩,
balancedness and singular values.

Not abstract: these defaults are exact for any family whose weight is multilinear in its factors
(each factor enters once, linearly), computed from ``reconstruct()``. The built-in families
override all three with cheaper factor-only computations.

A float16/bfloat16 layer computes all three in float32 and returns float32 (:func:`in_float32`: QR and
SVD have no half-precision CPU kernels, and Gram differences of half-precision factors are noise);
every family's own versions are wrapped so, by :meth:`Diagnostics.__init_subclass__`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .spec import DenseSpec, matricize
from .spectral import HALF_DTYPES
from .walk import call_with

TRACKED = ("inner", "balancedness", "singular_values")  # what the dynamics tracker reads


def in_float32(method: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``method`` evaluated at float32 copies of the module's floating parameters and buffers (and of
    tensors in its arguments) when the module holds half-precision parameters; as it is otherwise."""

    @functools.wraps(method)
    def run(self: nn.Module, *args: Any) -> Tensor:
        if not any(p.dtype in HALF_DTYPES for p in self.parameters()):
            return method(self, *args)
        named = itertools.chain(self.named_parameters(), self.named_buffers())
        state = {name: t.float() for name, t in named if t.is_floating_point()}
        args = tuple([t.float() for t in a] if isinstance(a, (list, tuple)) else a for a in args)
        return call_with(self, lambda module: method(module, *args), state)

    return run


class Diagnostics(nn.Module):
    """Mixin of :class:`~tdecomp.layers.base.FactorizedLayer`: defaults from ``reconstruct()`` and ``factors()``."""

    family: str
    spec: DenseSpec

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in TRACKED:
            if name in vars(cls):
                setattr(cls, name, in_float32(vars(cls)[name]))

    @in_float32
    def inner(self, other: Sequence[Tensor]) -> Tensor:
        """⟨W, W'⟩_F, where W' is the weight this layer would have with ``other`` as its factors.

        ``other`` matches :meth:`factors` entry by entry (same shapes, e.g. a detached snapshot
        of this layer's factors at an earlier step); ``inner(factors())`` equals
        :meth:`frobenius_sq`. Scalar tensor. Built-in families compute it from cross-Gram
        matrices of the two factor sets; the default reconstructs both W and W'.
        """
        return (self.reconstruct() * self._reconstruct_with(other)).sum()

    @in_float32
    def balancedness(self) -> Tensor:
        """How far the factors are from balanced: a norm of quantities gradient flow conserves.

        Each family sums ‖D‖²_F over the conserved Gram differences D of its adjacent factor
        pairs and returns the square root (its docstring gives D). Gradient flow on any loss of
        W alone (including Frobenius decay) leaves every D unchanged; plain weight decay λ on the
        factors shrinks them as e^{−2λt}. Scalar tensor, 0 for balanced factors.

        Default: D_k = ‖F_k‖²_F − ‖F_{k+1}‖²_F over consecutive :meth:`factors`. W multilinear
        in the factors is invariant under F_k → cF_k, F_{k+1} → F_{k+1}/c, so gradient flow
        conserves D_k (the trace of the Gram differences the built-in families report).
        """
        sq = torch.stack([f.square().sum() for f in self.factors()])
        return (sq[:-1] - sq[1:]).norm()

    @in_float32
    def singular_values(self) -> Tensor:
        """Singular values (descending) of W's matricization :func:`~tdecomp.layers.spec.matricize`.

        Default: reconstruct W and take ``svdvals`` of the m × n matrix (``spec.matrix_shape``),
        O(mn·min(m, n)); families with orthogonalizable factors override it
        with QR of the factors and an SVD of a small core.
        """
        return torch.linalg.svdvals(matricize(self.reconstruct(), self.spec))

    def _reconstruct_with(self, factors: Sequence[Tensor]) -> Tensor:
        """:meth:`reconstruct` with the parameters that :meth:`factors` returns replaced by ``factors``."""
        names = {id(p): name for name, p in self.named_parameters()}
        mine = self.factors()
        missing = [i for i, f in enumerate(mine) if id(f) not in names]
        if missing or len(factors) != len(mine):
            raise NotImplementedError(
                f"family {self.family!r}: the default inner() needs factors() to return its parameters "
                f"and {len(mine)} replacements; override inner() instead"
            )
        return call_with(self, "reconstruct", {names[id(f)]: o for f, o in zip(mine, factors)})
