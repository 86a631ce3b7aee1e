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

from .geometry import AttentionSpec
from .heads import ATTENTION_FAMILIES, HeadProducts, get_heads, register_heads
from .module import FactorizedMultiheadAttention

__all__ = [
    "ATTENTION_FAMILIES",
    "AttentionSpec",
    "FactorizedMultiheadAttention",
    "HeadProducts",
    "get_heads",
    "register_heads",
]
