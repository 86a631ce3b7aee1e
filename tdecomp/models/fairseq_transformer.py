"""The Transformer of the fairseq fork Khodak et al. (2021) train on IWSLT'14 (``--arch transformer_small``).

microsoft/fnl_paper Transformer-PyTorch/fairseq/models/transformer.py: d = 256, 4 heads, FFN 1024,
2 encoder + 2 decoder layers (``base_architecture``, transformer.py:597-609; model arguments
default to SUPPRESS, options.py:47, so ``getattr`` falls back to these); pre-norm residual blocks
with the fork's LayerNormalization, learned positions, bias-free attention and FFN projections,
an untied output projection with bias; embeddings N(0, 0.1), Linear U(−0.1, 0.1) (transformer.py:527-545).

``rank_scale`` s > 0 builds every attention at head dimension int(s·d/H) (transformer.py:337-338);
the feed-forward layers, embeddings and output projection are factorized afterwards by
:func:`tdecomp.factorize_model` (targets ``linear`` + ``embedding``, no skip, ``RankScale(s)``), as
the fork patches them (singleprocess_train.py:50-64,102-103). ``spectral_attention`` is the fork's
``--spectral-quekey --spectral-outval`` (always passed together, make.py:288).
Token id 0 is padding (:mod:`tdecomp.data.text`); positions are 1, 2, … over the non-padding
tokens (``make_positions``, fairseq/utils.py:315-333).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers.attention.reduced import MASKED, HeadReducedAttention
from .registry import register_model
from .transformer import PAD


class FairseqLayerNorm(nn.Module):
    """γ (x − mean)/(std + ε) + β with the unbiased std (fairseq/modules/layer_normlization.py)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.beta


def _linear(n_in: int, n_out: int, bias: bool = False) -> nn.Linear:
    """transformer.py:539-545."""
    layer = nn.Linear(n_in, n_out, bias=bias)
    for p in layer.parameters():
        nn.init.uniform_(p, -0.1, 0.1)
    return layer


def _embedding(n: int, dim: int) -> nn.Embedding:
    """transformer.py:527-536 (the padding row is drawn too)."""
    table = nn.Embedding(n, dim, padding_idx=PAD)
    nn.init.normal_(table.weight, 0.0, 0.1)
    return table


class FeedForward(nn.Module):
    """fc2(dropout(relu(fc1(x)))), bias-free (transformer.py:456-467)."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = _linear(dim, ffn_dim), _linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class _Coder(nn.Module):
    """Token + position embeddings and ``layers`` pre-norm blocks of the sublayers in ``kinds``
    ("self", "cross", "ffn"), each x ← x + dropout(f(LN(x))); then LN (transformer.py:114-133,203-245)."""

    def __init__(self, vocab: int, dim: int, heads: int, ffn_dim: int, layers: int, kinds: tuple[str, ...],
                 dropout: float, relu_dropout: float, max_positions: int, rank_scale: float, spectral: bool) -> None:
        super().__init__()
        self.embed_tokens, self.embed_positions = _embedding(vocab, dim), _embedding(max_positions, dim)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            kind: FeedForward(dim, ffn_dim, relu_dropout) if kind == "ffn"
            else HeadReducedAttention(dim, heads, rank_scale, spectral) for kind in kinds}) for _ in range(layers))
        self.norms = nn.ModuleList(nn.ModuleList(FairseqLayerNorm(dim) for _ in kinds) for _ in range(layers))
        self.out_norm = FairseqLayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor, self_bias: Tensor, memory: Tensor | None = None) -> Tensor:
        real = ids != PAD
        positions = torch.cumsum(real, 1) * real  # PAD (0) stays 0
        x = self.dropout(self.embed_tokens(ids) + self.embed_positions(positions))
        for block, norms in zip(self.blocks, self.norms):
            for (kind, f), norm in zip(block.items(), norms):
                h = norm(x)
                # the fork's encoder-decoder attention takes no mask (transformer.py:239)
                y = f(h) if kind == "ffn" else f(h, None, self_bias) if kind == "self" else f(h, memory)
                x = x + self.dropout(y)
        return self.out_norm(x)


@register_model("transformer_small_fairseq")
class FairseqTransformer(nn.Module):
    """``forward(src (N, S), tgt_in (N, T)) → logits (N, T, tgt_vocab)``; :meth:`encode` / :meth:`decode`
    as :class:`~tdecomp.models.transformer.Seq2SeqTransformer` (greedy decoding recomputes prefixes).

    Dropout ``dropout`` on embeddings and residual branches (the run's ``--dropout``), ``relu_dropout``
    inside the FFN (the 0.1 default, never overridden, transformer.py:77,109).
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 256, heads: int = 4, ffn_dim: int = 1024,
                 layers: int = 2, dropout: float = 0.1, relu_dropout: float = 0.1, max_positions: int = 1024,
                 rank_scale: float = 0.0, spectral_attention: bool = False) -> None:
        super().__init__()
        if not 0.0 <= rank_scale < 1.0:
            raise ValueError(f"rank_scale must be in [0, 1) (0: full head dimension), got {rank_scale!r}")
        common = dict(dim=d_model, heads=heads, ffn_dim=ffn_dim, layers=layers, dropout=dropout,
                      relu_dropout=relu_dropout, max_positions=max_positions, rank_scale=rank_scale,
                      spectral=spectral_attention)
        self.encoder = _Coder(src_vocab, kinds=("self", "ffn"), **common)
        self.decoder = _Coder(tgt_vocab, kinds=("self", "cross", "ffn"), **common)
        self.out_embed = _linear(d_model, tgt_vocab, bias=True)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Memory (N, S, d) and the source padding mask (N, S) (True = padding)."""
        padding = src == PAD
        return self.encoder(src, padding[:, None, :] * MASKED), padding

    def decode(self, tgt_in: Tensor, memory: Tensor, src_padding: Tensor) -> Tensor:
        """Next-token logits (N, T, tgt_vocab) for every prefix of ``tgt_in`` (N, T)."""
        t = tgt_in.shape[1]
        causal = torch.ones(t, t, device=tgt_in.device).triu(1) * MASKED
        bias = (tgt_in == PAD)[:, None, :] * MASKED + causal
        return self.out_embed(self.decoder(tgt_in, bias, memory))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, *self.encode(src))
