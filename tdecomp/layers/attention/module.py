"""The drop-in ``nn.MultiheadAttention`` replacement built on a head family."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._budget import allocate
from ..._validation import check_choice
from ...init import INIT_METHODS
from ..factorized import Factorized
from ..ranks import Rank
from .geometry import AttentionSpec, _default_product_stds, _dense_heads
from .heads import default_heads, get_heads


def _additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True = may not attend) as 0/−∞, a float mask as is."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


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
        family: a family that defines attention heads (:data:`ATTENTION_FAMILIES`): ``"lowrank"`` (per
            head, the default) or ``"tucker"`` (across heads).

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
        family: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spec = AttentionSpec(embed_dim, num_heads, kdim or embed_dim, vdim or embed_dim, bias)
        self.family = family = default_heads() if family is None else family
        ranks = self.resolve_rank(self.spec, rank, family)
        self.dropout, self.batch_first = dropout, batch_first
        products, factory = get_heads(family), {"device": device, "dtype": dtype}
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
    def resolve_rank(cls, spec: AttentionSpec, rank: Rank, family: str | None = None) -> tuple[int, ...]:
        """Explicit ranks from an int, a tuple (one entry per rank name) or a parameter ratio."""
        family = default_heads() if family is None else family
        products = get_heads(family)
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
        products = get_heads(family)
        return sum(products.count_params(spec.num_heads, m, n, rank) for m, n in spec.pair_dims)

    @classmethod
    def total_params(cls, spec: AttentionSpec, family: str, rank: Sequence[int]) -> int:
        """All parameters at ``rank``: factors, query and value biases (H·k each), output bias."""
        products = get_heads(family)
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
        cls, module: nn.MultiheadAttention, rank: Rank, family: str | None = None, init: str = "spectral"
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
