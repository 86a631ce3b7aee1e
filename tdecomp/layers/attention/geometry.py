"""Attention geometry: the dense module's shape (:class:`AttentionSpec`) and its per-head products."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ..._validation import check_positive_int


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
