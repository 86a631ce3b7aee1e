"""Attention built at a reduced head dimension, as the fairseq fork of Khodak et al. (2021) does
(microsoft/fnl_paper Transformer-PyTorch/fairseq/models/transformer.py:262-386)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..factorized import Factorized
from ..lowrank import LowRankHeads

# the fork's additive mask value (transformer.py:561,566)
MASKED = -1e9


def reduced_head_dim(dim: int, heads: int, rank_scale: float) -> int:
    """r = int(s·d/H), or d/H at s = 0 (transformer.py:337-338: key_dim = int(s·d/H)·H)."""
    return int(rank_scale * dim / heads) if rank_scale else dim // heads


class HeadPairs(Factorized):
    """H products M_h = L_h R_hᵀ (d, d) whose factors are a layer's projections, Frobenius-decayed
    together: the fork's ``QueKey`` (L_h = W_Q^hᵀ, R_h = W_K^hᵀ) and ``OutVal`` (L_h = W_O^h,
    R_h = W_V^hᵀ) (transformer.py:262-326). Factors: ``pairs.U`` (H, d, r), ``pairs.V`` (H, d, r)."""

    def __init__(self, heads: int, dim: int, head_dim: int) -> None:
        super().__init__()
        self.pairs = LowRankHeads(heads, dim, dim, (head_dim,), {})

    def frobenius_sq(self) -> Tensor:
        """Σ_h ‖L_h R_hᵀ‖²_F (the fork's ``batch_frobgrad`` is its gradient, frob.py:30-48)."""
        return self.pairs.frobenius_sq()

    @torch.no_grad()
    def init_fairseq(self, spectral: bool) -> None:
        """Every factor entry U(−0.1, 0.1), the fork's Linear init (transformer.py:539-545); with
        ``spectral`` then the balanced SVD of each product at its own rank r, which keeps every
        product and balances its factors (``batch_spectral_init``, frob.py:66-76,
        singleprocess_train.py:67-73)."""
        self.pairs.U.uniform_(-0.1, 0.1)
        self.pairs.V.uniform_(-0.1, 0.1)
        if spectral:
            self.pairs.init_spectral(self.pairs.products())


class HeadReducedAttention(nn.Module):
    """Multi-head attention with bias-free projections of head dimension r (transformer.py:329-386).

    Per head, q_h = X_q L_h, k_h = X_kv R_h, v_h = X_kv R'_h (all (·, r)), scores q_h k_hᵀ/√r, output
    Y = Σ_h softmax(scores + bias) v_h L'_hᵀ, with (L, R) = ``quekey`` and (L', R') = ``outval``.
    ``bias``: additive (N or 1, L, S) or None. No dropout on the attention weights (the fork's
    ``dot_product_attention`` ignores its dropout argument, transformer.py:504-524).
    Shapes: query (N, L, d), memory (N, S, d) → (N, L, d).
    """

    def __init__(self, dim: int, heads: int, rank_scale: float = 0.0, spectral: bool = False) -> None:
        super().__init__()
        self.head_dim = reduced_head_dim(dim, heads, rank_scale)
        self.quekey = HeadPairs(heads, dim, self.head_dim)
        self.outval = HeadPairs(heads, dim, self.head_dim)
        for pairs in (self.quekey, self.outval):
            pairs.init_fairseq(spectral)

    def forward(self, query: Tensor, memory: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        memory = query if memory is None else memory
        qk, ov = self.quekey.pairs, self.outval.pairs
        q = torch.einsum("nle,hek->nhlk", query, qk.U)
        k = torch.einsum("nse,hek->nhsk", memory, qk.V)
        v = torch.einsum("nse,hek->nhsk", memory, ov.V)
        mask = None if bias is None else bias[:, None].to(q.dtype)
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim**-0.5)
        return torch.einsum("nhlk,hek->nle", z, ov.U)
