"""Factorized multi-head attention: every head's QKᵀ and OVᵀ products as factor pairs.

Head h of ``nn.MultiheadAttention`` (embed dim E, head dim d_h = E/H) computes

    A_h = softmax((X_q W_Q^h + b_Q^h)(X_k W_K^h + b_K^h)ᵀ / √d_h),
    Y = Σ_h A_h (X_v W_V^h + b_V^h) W_O^hᵀ + b_O

with W_Q^h (E, d_h), W_K^h (k_dim, d_h), W_V^h (v_dim, d_h), W_O^h (E, d_h). Only the products
QK_h = W_Q^h W_K^hᵀ (E, k_dim) and OV_h = W_O^h W_V^hᵀ (E, v_dim) matter (Khodak et al. 2021,
"factorize per head QKᵀ and OVᵀ; apply FD to the products"). :class:`FactorizedMultiheadAttention`
holds each as QK_h = L_h R_hᵀ, OV_h = L'_h R'_hᵀ, in a family that says how the factors are shared:

- ``lowrank``: independent per-head factors of rank r ≤ d_h (balanced truncated SVD for SI);
- ``tucker``: a Tucker decomposition of the stacked (H, E, n) tensor of products, with factor
  matrices shared by all heads and a per-head core slice (HOOI for SI).

Biases are mapped exactly. The key bias adds q·b_K^h, constant over keys, so it cancels in the
softmax. The query bias adds the key-dependent score x_k·(W_K^h b_Q^h) and the value bias the
output W_O^h b_V^h; they become a query bias c_h and a value bias e_h in the factor space, the
least-squares solutions of R_h c_h = W_K^h b_Q^h and L'_h e_h = W_O^h b_V^h (exact when those
vectors lie in the factors' spans, as they do at rank d_h).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._budget import allocate
from .._decompositions import tucker_hooi
from .._registry import Registry
from .._validation import check_choice, check_positive_int
from ..init import INIT_METHODS, balance_norms, balanced_std, equalizing_scales
from .base import Factorized, Rank
from .lowrank import balanced_svd, product_frobenius_sq


@dataclass(frozen=True)
class AttentionSpec:
    """Geometry of an ``nn.MultiheadAttention``: E, H, the key/value input dims and biases."""

    embed_dim: int
    num_heads: int
    kdim: int
    vdim: int
    has_bias: bool

    def __post_init__(self) -> None:
        check_positive_int("embed_dim", self.embed_dim)
        check_positive_int("num_heads", self.num_heads)
        if self.embed_dim % self.num_heads:
            divisors = [h for h in range(1, self.embed_dim + 1) if self.embed_dim % h == 0]
            raise ValueError(
                f"num_heads={self.num_heads} must divide embed_dim={self.embed_dim}; "
                f"allowed values: {divisors}"
            )

    @classmethod
    def from_module(cls, module: nn.MultiheadAttention) -> AttentionSpec:
        """Describe ``module``; ``NotImplementedError`` for add_bias_kv / add_zero_attn."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            # the extra key/value rows break the key-bias cancellation the factorization relies on
            raise NotImplementedError("add_bias_kv=True and add_zero_attn=True are not supported")
        return cls(module.embed_dim, module.num_heads, module.kdim, module.vdim,
                   module.in_proj_bias is not None)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def pair_dims(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(m, n) of the QK products (E, k_dim) and of the OV products (E, v_dim)."""
        return (self.embed_dim, self.kdim), (self.embed_dim, self.vdim)

    @property
    def weight_numel(self) -> int:
        """Dense projection weights: W_Q, W_K, W_V and W_O."""
        return self.embed_dim * (2 * self.embed_dim + self.kdim + self.vdim)

    @property
    def num_params(self) -> int:
        """Parameters of the dense module: weights, in-projection bias (3E) and output bias (E)."""
        return self.weight_numel + (4 * self.embed_dim if self.has_bias else 0)


# ---------------------------------------------------------------------------------- families
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


# ---------------------------------------------------------------------------------- dense side
def _dense_heads(module: nn.MultiheadAttention) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Per-head products of a dense module and the images of its query and value biases.

    Returns QK (H, E, k_dim) with QK_h = W_Q^h W_K^hᵀ, OV (H, E, v_dim) with OV_h = W_O^h W_V^hᵀ,
    W_K^h b_Q^h (H, k_dim) and W_O^h b_V^h (H, E) (``None`` without biases). Note PyTorch stores
    the transposes: in_proj rows h·d_h…(h+1)·d_h are (W_Q^h)ᵀ.
    """
    spec = AttentionSpec.from_module(module)
    h, d = spec.num_heads, spec.head_dim
    if module._qkv_same_embed_dim:
        wq, wk, wv = module.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    wq, wk, wv = (w.detach().reshape(h, d, -1) for w in (wq, wk, wv))  # (H, d_h, in)
    wo = module.out_proj.weight.detach().reshape(spec.embed_dim, h, d).transpose(0, 1)  # (H, E, d_h)
    qk, ov = wq.mT @ wk, wo @ wv
    if not spec.has_bias:
        return qk, ov, None, None
    bq, _, bv = module.in_proj_bias.detach().reshape(3, h, d, 1)  # b_K cancels in the softmax
    return qk, ov, (wk.mT @ bq).squeeze(-1), (wo @ bv).squeeze(-1)


def _default_product_stds(spec: AttentionSpec) -> tuple[float, float]:
    """Entry std of QK_h and OV_h under PyTorch's default ``nn.MultiheadAttention`` init.

    Projections are Xavier-uniform, var 2/(fan_in + fan_out) (the packed in_proj is one
    (3E, E) matrix); out_proj keeps nn.Linear's U(±1/√E), var 1/(3E). A product entry sums
    d_h products of independent entries: var = d_h·var₁·var₂.
    """
    e = spec.embed_dim
    if spec.kdim == spec.vdim == e:
        var_q = var_k = var_v = 2.0 / (4 * e)
    else:
        var_q, var_k, var_v = 1.0 / e, 2.0 / (e + spec.kdim), 2.0 / (e + spec.vdim)
    var_o = 1.0 / (3 * e)
    return math.sqrt(spec.head_dim * var_q * var_k), math.sqrt(spec.head_dim * var_o * var_v)


def _additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True = may not attend) as 0/−∞, a float mask as is."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


# ---------------------------------------------------------------------------------- the module
class FactorizedMultiheadAttention(Factorized):
    """Drop-in ``nn.MultiheadAttention`` whose per-head QKᵀ and OVᵀ products are factorized.

    Args:
        embed_dim, num_heads, dropout, bias, kdim, vdim, batch_first: as ``nn.MultiheadAttention``
            (``add_bias_kv`` and ``add_zero_attn`` are not supported).
        rank: per family (:data:`ATTENTION_FAMILIES`): ``lowrank``: an int r ∈ [1, d_h] or
            ``(r,)``, the rank of every head's products; ``tucker``: ``(r_left, r_right)`` or an
            int for both, r_left ∈ [1, E] and r_right ∈ [1, max(k_dim, v_dim)], the ranks of the
            shared query/output-side and key/value-side factors; a float: a ratio of parameters to
            the dense projection weights. Each product set clamps the ranks to its shape
            (:meth:`HeadProducts.effective_rank`).
        family: ``"lowrank"`` (per head) or ``"tucker"`` (across heads).

    Shapes: query (L, N, E), key (S, N, k_dim), value (S, N, v_dim) → (L, N, E), or (N, L, E)…
    with ``batch_first``, or unbatched (L, E)…; attention weights (N, L, S), or (N, H, L, S)
    with ``average_attn_weights=False``. Per head with inner dim k (r for ``lowrank``):
    q_h = X_q L_h + c_h, k_h = X_k R_h, v_h = X_v R'_h + e_h (all (·, k)), scores q_h k_hᵀ/√d_h
    with the dense d_h, and Y = Σ_h softmax(scores) v_h L'_hᵀ + b_O. Parameters: ``qk``/``ov``
    (:class:`HeadProducts`), ``q_bias``/``v_bias`` (H·k_qk,)/(H·k_ov,) and ``out_bias`` (E,).
    Construction draws balanced random factors at PyTorch's default product scale with zero
    biases; :meth:`from_dense` applies spectral initialization to a given module.

    Inside ``nn.TransformerEncoderLayer``/``DecoderLayer`` it works as is; ``nn.TransformerEncoder``
    needs ``enable_nested_tensor=False`` (its fused inference path reads the dense weights).
    """

    # The fused-path guards of nn.TransformerEncoderLayer read these; the values turn it off.
    in_proj_bias: ClassVar[None] = None
    _qkv_same_embed_dim: ClassVar[bool] = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        rank: Rank,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        family: str = "lowrank",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spec = AttentionSpec(embed_dim, num_heads, kdim or embed_dim, vdim or embed_dim, bias)
        self.family = family
        ranks = self.resolve_rank(self.spec, rank, family)
        self.dropout, self.batch_first = dropout, batch_first
        products, factory = ATTENTION_FAMILIES.get(family), {"device": device, "dtype": dtype}
        (qk_m, qk_n), (ov_m, ov_n) = self.spec.pair_dims
        self._rank = ranks
        self.qk = products(num_heads, qk_m, qk_n, ranks, factory)
        self.ov = products(num_heads, ov_m, ov_n, ranks, factory)
        q_size, v_size = num_heads * self.qk.inner_dim, num_heads * self.ov.inner_dim
        for name, size in (("q_bias", q_size), ("v_bias", v_size), ("out_bias", embed_dim)):
            param = nn.Parameter(torch.empty(size, **factory)) if bias else None
            self.register_parameter(name, param)
        self.reset_parameters()

    # ------------------------------------------------------------------ ranks and budgets
    @classmethod
    def resolve_rank(cls, spec: AttentionSpec, rank: Rank, family: str = "lowrank") -> tuple[int, ...]:
        """Explicit ranks from an int, a tuple (one entry per rank name) or a parameter ratio."""
        products = ATTENTION_FAMILIES.get(family)
        names = products.rank_names()
        if isinstance(rank, (bool, str)):
            raise TypeError(f"rank must be a float, an int or a tuple of ints, got {rank!r}")
        if isinstance(rank, float):
            if not math.isfinite(rank) or rank <= 0:
                raise ValueError(f"rank must be a positive parameter ratio, got {rank!r}")
            (ranks,) = allocate(
                [lambda s: products.ranks_at_scale(spec, s)],
                lambda _, r: cls.count_params(spec, family, r),
                rank * spec.weight_numel,
            )
            return ranks
        ranks = (rank,) * len(names) if isinstance(rank, int) else tuple(rank)
        if len(ranks) != len(names) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
            raise ValueError(f"rank for {family} attention must be an int or {len(names)} ints {names}, "
                             f"got {rank!r}")
        products.check_rank(spec, ranks)
        return ranks

    @classmethod
    def count_params(cls, spec: AttentionSpec, family: str, rank: Sequence[int]) -> int:
        """Factor parameters (biases excluded) of both product sets at ``rank``."""
        products = ATTENTION_FAMILIES.get(family)
        return sum(products.count_params(spec.num_heads, m, n, rank) for m, n in spec.pair_dims)

    @classmethod
    def total_params(cls, spec: AttentionSpec, family: str, rank: Sequence[int]) -> int:
        """All parameters at ``rank``: factors, query and value biases (H·k each), output bias."""
        products = ATTENTION_FAMILIES.get(family)
        inner = sum(products.effective_rank(spec.num_heads, m, n, rank)[-1] for m, n in spec.pair_dims)
        biases = spec.num_heads * inner + spec.embed_dim if spec.has_bias else 0
        return cls.count_params(spec, family, rank) + biases

    @property
    def rank(self) -> tuple[int, ...]:
        """The requested ranks (each product set clamps them to its shape, see ``qk.rank``/``ov.rank``)."""
        return self._rank

    @property
    def param_ratio(self) -> float:
        """Parameters held relative to the dense ``nn.MultiheadAttention`` (``spec.num_params``)."""
        return self.num_params / self.spec.num_params

    # ------------------------------------------------------------------ initialization
    @classmethod
    def from_dense(
        cls, module: nn.MultiheadAttention, rank: Rank, family: str = "lowrank", init: str = "spectral"
    ) -> FactorizedMultiheadAttention:
        """Factorize ``module``: ``init="spectral"`` decomposes its per-head products (exact at
        rank d_h for ``lowrank``, at full ranks for ``tucker``); ``"random"`` draws balanced
        factors with its products' entry std, zero query/value biases and its output bias."""
        check_choice("init", init, INIT_METHODS)
        spec = AttentionSpec.from_module(module)
        weight = module.out_proj.weight
        layer = cls(spec.embed_dim, spec.num_heads, rank, dropout=module.dropout, bias=spec.has_bias,
                    kdim=spec.kdim, vdim=spec.vdim, batch_first=module.batch_first, family=family,
                    device=weight.device, dtype=weight.dtype)
        qk, ov, key_image, out_image = _dense_heads(module)
        if init == "spectral":
            layer.init_spectral(qk, ov, key_image, out_image)
        else:
            layer.init_random(float(qk.std()), float(ov.std()))
        if spec.has_bias:
            with torch.no_grad():
                layer.out_bias.copy_(module.out_proj.bias)
        return layer.train(module.training)  # attention dropout follows the replaced module's mode

    @torch.no_grad()
    def init_spectral(
        self, qk: Tensor, ov: Tensor, key_image: Tensor | None = None, out_image: Tensor | None = None
    ) -> None:
        """Decompose the products ``qk`` (H, E, k_dim) and ``ov`` (H, E, v_dim); fit the query and
        value biases to the bias images W_K^h b_Q^h (H, k_dim) and W_O^h b_V^h (H, E) by least
        squares in the factor spans (exact when the images lie in them)."""
        self.qk.init_spectral(qk)
        self.ov.init_spectral(ov)
        if self.q_bias is not None and key_image is not None:
            self.q_bias.copy_((torch.linalg.pinv(self.qk.right()) @ key_image[..., None]).flatten())
            self.v_bias.copy_((torch.linalg.pinv(self.ov.left()) @ out_image[..., None]).flatten())

    @torch.no_grad()
    def init_random(self, qk_std: float, ov_std: float) -> None:
        """Balanced Gaussian factors with product entry stds ``qk_std``/``ov_std``; zero biases."""
        self.qk.init_random(qk_std)
        self.ov.init_random(ov_std)
        for b in (self.q_bias, self.v_bias, self.out_bias):
            if b is not None:
                b.zero_()

    def reset_parameters(self) -> None:
        """Random factors at the scale of PyTorch's default dense init, zero biases (as PyTorch)."""
        self.init_random(*_default_product_stds(self.spec))

    # ------------------------------------------------------------------ the interface
    def frobenius_sq(self) -> Tensor:
        """Σ_h ‖W_Q^h W_K^hᵀ‖²_F + ‖W_O^h W_V^hᵀ‖²_F from factor Grams (no product formed)."""
        return self.qk.frobenius_sq() + self.ov.frobenius_sq()

    def balancing_scales(self) -> list[tuple[nn.Parameter, Tensor]]:
        """The product sets' balancing scales, plus the query and value biases, which live in the
        factor space: c_h in q_h = X_q L_h + c_h pairs with R_h (c_h ← c_h/c), e_h in
        v_h = X_v R'_h + e_h with R'_h (e_h ← c'·e_h)."""
        (qk, qk_right), (ov, ov_right) = self.qk.balancing_scales(), self.ov.balancing_scales()
        biases = [] if self.q_bias is None or not qk + ov else [(self.q_bias, 1 / qk_right), (self.v_bias, ov_right)]
        return qk + ov + biases

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """As ``nn.MultiheadAttention.forward``. Masks: boolean (True = may not attend) or
        additive float; ``attn_mask`` (L, S) or (N·H, L, S), ``key_padding_mask`` (N, S).
        ``is_causal`` without ``attn_mask`` applies the causal mask (PyTorch requires both)."""
        batched = query.dim() == 3
        if not batched:
            query, key, value = query[None], key[None], value[None]
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, tgt_len, src_len, heads = query.shape[0], query.shape[1], key.shape[1], self.spec.num_heads
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool, device=query.device).triu(1)
        mask = _additive_mask(attn_mask, query.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.view(n, heads, tgt_len, src_len)
        padding = _additive_mask(key_padding_mask, query.dtype)
        if padding is not None:
            padding = padding.view(n, 1, 1, src_len)
            mask = padding if mask is None else mask + padding

        q = torch.einsum("nle,hek->nhlk", query, self.qk.left())
        k = torch.einsum("nse,hek->nhsk", key, self.qk.right())
        v = torch.einsum("nse,hek->nhsk", value, self.ov.right())
        if self.q_bias is not None:
            q = q + self.q_bias.view(heads, 1, -1)
            v = v + self.v_bias.view(heads, 1, -1)
        scale = self.spec.head_dim**-0.5  # the dense head dim, whatever the rank
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.mT) * scale
            weights = F.dropout(torch.softmax(scores if mask is None else scores + mask, dim=-1), dropout)
            z = weights @ v  # like PyTorch, the returned weights are the dropped-out ones
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
        out = torch.einsum("nhlk,hek->nle", z, self.ov.left())
        if self.out_bias is not None:
            out = out + self.out_bias
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if not batched:
            return out[0], None if weights is None else weights[0]
        return (out if self.batch_first else out.transpose(0, 1)), weights

    @torch.no_grad()
    def to_dense(self) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` computing exactly this module's function.

        Each head's factors are zero-padded to d_h columns: W_Q^h = [L_h 0], W_K^h = [R_h 0],
        b_Q^h = [c_h 0], b_K = 0, and likewise for V and O. This is exact whenever the inner
        dimension k ≤ d_h (any ``lowrank`` rank; ``tucker`` with r_right ≤ d_h). A larger k gives
        products of rank up to k, more than a dense head holds: ``ValueError`` then.
        """
        s = self.spec
        k = max(self.qk.inner_dim, self.ov.inner_dim)
        if k > s.head_dim:
            raise ValueError(
                f"to_dense needs a per-head inner dimension ≤ head_dim={s.head_dim}, this {self.family} "
                f"attention has {k} (rank={self.rank}): its products need not fit a dense head"
            )
        ref = self.qk.left()  # device and dtype; families need not name their factors U
        dense = nn.MultiheadAttention(s.embed_dim, s.num_heads, dropout=self.dropout, bias=s.has_bias,
                                      kdim=s.kdim, vdim=s.vdim, batch_first=self.batch_first,
                                      device=ref.device, dtype=ref.dtype)

        def stacked(factors: Tensor) -> Tensor:  # (H, in, k) → the (H·d_h, in) PyTorch layout
            return F.pad(factors, (0, s.head_dim - factors.shape[-1])).mT.reshape(s.embed_dim, -1)

        wq, wk, wv = stacked(self.qk.left()), stacked(self.qk.right()), stacked(self.ov.right())
        if dense._qkv_same_embed_dim:
            dense.in_proj_weight.copy_(torch.cat([wq, wk, wv]))
        else:
            dense.q_proj_weight.copy_(wq)
            dense.k_proj_weight.copy_(wk)
            dense.v_proj_weight.copy_(wv)
        dense.out_proj.weight.copy_(stacked(self.ov.left()).T)
        if s.has_bias:
            bq, bv = (stacked(b.view(s.num_heads, 1, -1)).flatten() for b in (self.q_bias, self.v_bias))
            dense.in_proj_bias.copy_(torch.cat([bq, torch.zeros_like(bq), bv]))
            dense.out_proj.bias.copy_(self.out_bias)
        return dense.train(self.training)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"embed_dim={s.embed_dim}, num_heads={s.num_heads}, family={self.family}, rank={self.rank}, "
                f"batch_first={self.batch_first}, params={self.num_params} ({self.param_ratio:.3f} of dense)")
