"""Head families: how the H per-head products M_h = L_h R_hᵀ are parametrized (the contract and its
registry; a family that serves attention defines its heads in its own file and registers them with
:func:`register_heads`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ..._decompositions import product_frobenius_sq
from ..._registry import Registry
from .geometry import AttentionSpec

if TYPE_CHECKING:
    from ..base import FactorizedLayer

ATTENTION_FAMILIES: Registry[type[HeadProducts]] = Registry("family")


def register_heads(layer: type[FactorizedLayer]) -> Callable[[type[HeadProducts]], type[HeadProducts]]:
    """Class decorator registering a :class:`HeadProducts` subclass as the attention heads of the
    registered family ``layer`` (under its name)."""

    def decorator(heads: type[HeadProducts]) -> type[HeadProducts]:
        ATTENTION_FAMILIES.register(layer.family)(heads)
        heads.family = layer.family
        return heads

    return decorator


def get_heads(family: str) -> type[HeadProducts]:
    """The heads of ``family``; a one-line ``ValueError`` saying which families attention supports otherwise."""
    if family not in ATTENTION_FAMILIES:
        names = ", ".join(map(repr, ATTENTION_FAMILIES.names()))
        raise ValueError(f"family={family!r} is not valid; expected one of: {names} (factorized attention "
                         "supports only the families that define attention heads)")
    return ATTENTION_FAMILIES.get(family)


def default_heads() -> str:
    """The family :class:`~tdecomp.layers.attention.FactorizedMultiheadAttention` uses unless told:
    the one whose heads say ``default`` (the paper's per-head factorization)."""
    return next(name for name in ATTENTION_FAMILIES.names() if ATTENTION_FAMILIES.get(name).default)


class HeadProducts(nn.Module, ABC):
    """H matrices M_h = L_h R_hᵀ of shape (m, n), one per head (all QK_h, or all OV_h).

    A family decides how L_h (m, k) and R_h (n, k) are parametrized; attention only uses them
    through :meth:`left` and :meth:`right`. The inner dimension k is ``rank[-1]``.
    """

    family: ClassVar[str]
    default: ClassVar[bool] = False  # the family attention uses when none is named (one family sets it)

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
