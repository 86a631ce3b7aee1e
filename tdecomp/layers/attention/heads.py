"""Head families: how the H per-head products M_h = L_h R_hᵀ are parametrized (registry and families)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..._decompositions import tucker_hooi
from ..._registry import Registry
from ...init import balance_norms, balanced_std, equalizing_scales
from ..lowrank import balanced_svd, product_frobenius_sq
from .geometry import AttentionSpec

ATTENTION_FAMILIES: Registry[type[HeadProducts]] = Registry("family")


class HeadProducts(nn.Module, ABC):
    """H matrices M_h = L_h R_hᵀ of shape (m, n), one per head (all QK_h, or all OV_h).

    A family decides how L_h (m, k) and R_h (n, k) are parametrized; attention only uses them
    through :meth:`left` and :meth:`right`. The inner dimension k is ``rank[-1]``.
    """

    family: ClassVar[str]

    def __init__(self, heads: int, m: int, n: int, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        super().__init__()
        self.heads, self.m, self.n = heads, m, n
        self._build(self.effective_rank(heads, m, n, rank), factory)

    @classmethod
    @abstractmethod
    def rank_names(cls) -> tuple[str, ...]:
        """What each entry of the rank tuple means."""

    @classmethod
    @abstractmethod
    def max_ranks(cls, spec: AttentionSpec) -> tuple[int, ...]:
        """Largest allowed value of each rank entry for attention of geometry ``spec``."""

    @classmethod
    def check_rank(cls, spec: AttentionSpec, rank: tuple[int, ...]) -> None:
        """``ValueError`` naming the allowed range unless 1 ≤ rank ≤ :meth:`max_ranks`."""
        limits = cls.max_ranks(spec)
        if not all(1 <= r <= m for r, m in zip(rank, limits)):
            raise ValueError(
                f"rank={rank} is out of range for {cls.family} attention "
                f"(embed_dim={spec.embed_dim}, num_heads={spec.num_heads}, head_dim={spec.head_dim}): "
                + ", ".join(f"{n} must be in [1, {m}]" for n, m in zip(cls.rank_names(), limits))
            )

    @classmethod
    def ranks_at_scale(cls, spec: AttentionSpec, scale: float) -> tuple[int, ...]:
        """Ranks at rank scale ``scale`` (1: the largest), non-decreasing in it (for budgets)."""
        return tuple(max(1, min(m, round(scale * m))) for m in cls.max_ranks(spec))

    @classmethod
    @abstractmethod
    def effective_rank(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> tuple[int, ...]:
        """``rank`` clamped to what H products of shape (m, n) can use (e.g. r ≤ min(m, n)).

        The QK and OV sets share the requested rank but may differ in shape (k_dim ≠ v_dim), so
        each set clamps on its own; beyond these bounds factors would be redundant."""

    @classmethod
    @abstractmethod
    def count_params(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> int:
        """Parameters of H products (m, n) at (the effective rank of) ``rank``."""

    @property
    def inner_dim(self) -> int:
        """k, the columns of L_h and R_h."""
        return self.rank[-1]

    @abstractmethod
    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        """Create the factor parameters."""

    @property
    @abstractmethod
    def rank(self) -> tuple[int, ...]:
        """The ranks in use."""

    @abstractmethod
    def left(self) -> Tensor:
        """L_h for every head, shape (H, m, k)."""

    @abstractmethod
    def right(self) -> Tensor:
        """R_h for every head, shape (H, n, k) (possibly a broadcast view of shared factors)."""

    @abstractmethod
    def init_spectral(self, products: Tensor) -> None:
        """Set the factors to the family's decomposition of ``products`` (H, m, n)."""

    @abstractmethod
    def init_random(self, std: float) -> None:
        """Balanced Gaussian factors whose products have entry std ``std``."""

    def products(self) -> Tensor:
        """The materialized products M_h = L_h R_hᵀ, shape (H, m, n)."""
        return self.left() @ self.right().mT

    def frobenius_sq(self) -> Tensor:
        """Σ_h ‖L_h R_hᵀ‖²_F = Σ_h tr((L_hᵀL_h)(R_hᵀR_h)), O(H(m+n)k²); no product is formed."""
        return product_frobenius_sq(self.left(), self.right())

    def balancing_scales(self) -> tuple[list[tuple[nn.Parameter, Tensor]], Tensor | float]:
        """``(parameter, scale)`` pairs that leave every product unchanged and balance the factor
        norms (see :meth:`Factorized.balancing_scales`), and the factor c by which they scale
        R_h (L_h scales by 1/c). Default: none (two factors per product, as low-rank layers)."""
        return [], 1.0

    def extra_repr(self) -> str:
        return f"heads={self.heads}, ({self.m}, {self.n}), rank={self.rank}"


@ATTENTION_FAMILIES.register("lowrank")
class LowRankHeads(HeadProducts):
    """Independent per-head factors M_h = U_h V_hᵀ, U (H, m, r), V (H, n, r), r ≤ d_h.

    SI: the balanced truncated SVD of every product, as :class:`~tdecomp.layers.LowRankLayer`.
    """

    family = "lowrank"

    @classmethod
    def rank_names(cls) -> tuple[str, ...]:
        return ("r",)

    @classmethod
    def max_ranks(cls, spec: AttentionSpec) -> tuple[int, ...]:
        return (spec.head_dim,)  # the dense products have rank ≤ d_h

    @classmethod
    def effective_rank(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> tuple[int, ...]:
        return (min(rank[0], m, n),)

    @classmethod
    def count_params(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> int:
        (r,) = cls.effective_rank(heads, m, n, rank)
        return heads * (m + n) * r

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        (r,) = rank
        self.U = nn.Parameter(torch.empty(self.heads, self.m, r, **factory))
        self.V = nn.Parameter(torch.empty(self.heads, self.n, r, **factory))

    @property
    def rank(self) -> tuple[int, ...]:
        return (self.U.shape[-1],)

    def left(self) -> Tensor:
        return self.U

    def right(self) -> Tensor:
        return self.V

    @torch.no_grad()
    def init_spectral(self, products: Tensor) -> None:
        u, v = balanced_svd(products.to(self.U.dtype), self.rank[0])
        self.U.copy_(u)
        self.V.copy_(v)

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        s = balanced_std(std, self.rank[0], 2)
        self.U.normal_(0.0, s)
        self.V.normal_(0.0, s)


@ATTENTION_FAMILIES.register("tucker")
class TuckerHeads(HeadProducts):
    """Tucker across heads: M_h = U G_h Vᵀ, U (m, r_left), V (n, r_right) shared by all heads,
    core G (H, r_left, r_right).

    This is the Tucker decomposition of the stacked products (H, m, n) with the head mode kept
    at full rank (a head factor would be absorbed by the core). L_h = U G_h, R_h = V: the heads
    share one key (value) projection, as in multi-query attention, and differ by their core
    slice. SI: HOOI of the stacked products, then balanced factor norms; under Frobenius decay
    :func:`tdecomp.rebalance` keeps them balanced after each optimizer step.
    """

    family = "tucker"

    @classmethod
    def rank_names(cls) -> tuple[str, ...]:
        return ("r_left", "r_right")

    @classmethod
    def max_ranks(cls, spec: AttentionSpec) -> tuple[int, ...]:
        return (spec.embed_dim, max(spec.kdim, spec.vdim))

    @classmethod
    def effective_rank(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> tuple[int, ...]:
        """r_left ≤ m, r_right ≤ n, and each ≤ H × the other: a core (H, r_l, r_r) cannot have
        unfoldings of larger rank, so larger factors would be redundant (and HOOI could not fill them)."""
        r_left, r_right = min(rank[0], m), min(rank[1], n)
        return min(r_left, heads * r_right), min(r_right, heads * r_left)

    @classmethod
    def count_params(cls, heads: int, m: int, n: int, rank: Sequence[int]) -> int:
        r_left, r_right = cls.effective_rank(heads, m, n, rank)
        return m * r_left + n * r_right + heads * r_left * r_right

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        r_left, r_right = rank
        self.core = nn.Parameter(torch.empty(self.heads, r_left, r_right, **factory))
        self.U = nn.Parameter(torch.empty(self.m, r_left, **factory))
        self.V = nn.Parameter(torch.empty(self.n, r_right, **factory))

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(self.core.shape[1:])

    def left(self) -> Tensor:
        return self.U @ self.core

    def right(self) -> Tensor:
        return self.V.expand(self.heads, -1, -1)

    @torch.no_grad()
    def init_spectral(self, products: Tensor) -> None:
        core, (heads, u, v) = tucker_hooi(products.to(self.U.dtype), (self.heads, *self.rank))
        self.core.copy_(torch.einsum("ha,abc->hbc", heads, core))
        self.U.copy_(u)
        self.V.copy_(v)
        balance_norms([self.core, self.U, self.V])

    @torch.no_grad()
    def init_random(self, std: float) -> None:
        s = balanced_std(std, math.prod(self.rank), 3)
        for p in (self.core, self.U, self.V):
            p.normal_(0.0, s)

    def balancing_scales(self) -> tuple[list[tuple[nn.Parameter, Tensor]], Tensor | float]:
        """Equal norms of G, U, V (Π c = 1, products unchanged): three factors drift under FD
        with SGD as a Tucker layer's do (:func:`tdecomp.rebalance`). R_h = V scales by c_V."""
        factors = [self.core, self.U, self.V]
        scales = equalizing_scales(torch.stack([f.norm() for f in factors]))
        return list(zip(factors, scales)), scales[2]
