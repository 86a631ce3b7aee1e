"""Small Transformers built on ``nn.MultiheadAttention``, so that model surgery can replace it.

- ``transformer_small``: encoder-decoder for translation, d=256, 4 heads, FFN 1024, 6 + 6 layers
  (upstream fairseq's IWSLT'14 shape; the paper's fork trains 2 + 2 layers, see
  :mod:`tdecomp.models.fairseq_transformer`);
- ``bert_small``: a BERT-style encoder with a masked-LM head.

The layers are written out here (pre-norm: x + f(LN(x)), which trains without warm-up tricks)
rather than taken from ``nn.TransformerEncoderLayer``, whose inference fast path reads
``nn.MultiheadAttention`` internals that a factorized attention does not have. Every attention
call passes ``need_weights=False`` (the fused path). Token id 0 is padding (see
:mod:`tdecomp.data.text`). Embeddings, norms and the output projection are not factorized by
default (``factorize_model`` keeps the last Linear dense; ``targets`` picks attention and/or FFN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .registry import register_model

PAD = 0


class SinusoidalPositions(nn.Module):
    """Adds PE[t, 2i] = sin(t/10000^{2i/d}), PE[t, 2i+1] = cos(…) to (N, T, d) inputs (no parameters)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        t = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(t * freq)
        table[:, 1::2] = torch.cos(t * freq)[:, : d_model // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.table.shape[0]}")
        return x + self.table[: x.shape[1]].to(x.dtype)


def _feed_forward(d_model: int, ffn_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))


class EncoderLayer(nn.Module):
    """x ← x + SelfAttn(LN(x)); x ← x + FFN(LN(x)). (N, S, d) → (N, S, d)."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = _feed_forward(d_model, ffn_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding: Tensor | None) -> Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, key_padding_mask=padding, need_weights=False)[0])
        return x + self.dropout(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder memory, FFN; pre-norm residuals."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = _feed_forward(d_model, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: Tensor, memory: Tensor, causal: Tensor, tgt_padding: Tensor | None,
                src_padding: Tensor | None) -> Tensor:
        h = self.norm1(y)
        y = y + self.dropout(self.self_attn(h, h, h, attn_mask=causal, key_padding_mask=tgt_padding,
                                            need_weights=False)[0])
        h = self.norm2(y)
        y = y + self.dropout(self.cross_attn(h, memory, memory, key_padding_mask=src_padding,
                                             need_weights=False)[0])
        return y + self.dropout(self.ffn(self.norm3(y)))


class _Embedding(nn.Module):
    """Token embedding × √d plus sinusoidal positions, then dropout: (N, T) ids → (N, T, d)."""

    def __init__(self, vocab: int, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model, padding_idx=PAD)
        nn.init.normal_(self.tokens.weight, 0.0, d_model**-0.5)
        with torch.no_grad():
            self.tokens.weight[PAD].zero_()
        self.positions = SinusoidalPositions(d_model, max_len)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        return self.dropout(self.positions(self.tokens(ids) * self.scale))


@register_model("transformer_small")
class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer: ``forward(src (N, S), tgt_in (N, T)) → logits (N, T, tgt_vocab)``.

    ``src_vocab``/``tgt_vocab`` come from the dataset; id 0 is padding. Decoding uses
    :meth:`encode` once and :meth:`decode` per step (see :class:`tdecomp.data.translation.Seq2SeqTask`).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 256,
        heads: int = 4,
        ffn_dim: int = 1024,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        dropout: float = 0.1,
        max_len: int = 256,
    ) -> None:
        super().__init__()
        self.src_embed = _Embedding(src_vocab, d_model, max_len, dropout)
        self.tgt_embed = _Embedding(tgt_vocab, d_model, max_len, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, ffn_dim, dropout) for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, ffn_dim, dropout) for _ in range(decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.generator = nn.Linear(d_model, tgt_vocab)  # last Linear: kept dense by the default skip

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Memory (N, S, d) and the source padding mask (N, S) (True = padding)."""
        padding = src == PAD
        x = self.src_embed(src)
        for layer in self.encoder:
            x = layer(x, padding)
        return self.encoder_norm(x), padding

    def decode(self, tgt_in: Tensor, memory: Tensor, src_padding: Tensor) -> Tensor:
        """Next-token logits (N, T, tgt_vocab) for every prefix of ``tgt_in`` (N, T)."""
        t = tgt_in.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt_in.device).triu(1)
        tgt_padding = tgt_in == PAD
        y = self.tgt_embed(tgt_in)
        for layer in self.decoder:
            y = layer(y, memory, causal, tgt_padding, src_padding)
        return self.generator(self.decoder_norm(y))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.decode(tgt_in, *self.encode(src))


@register_model("bert_small")
class MaskedLMEncoder(nn.Module):
    """BERT-style encoder with a masked-LM head: ``forward(ids (N, L)) → logits (N, L, vocab_size)``."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        heads: int = 4,
        ffn_dim: int = 1024,
        layers: int = 4,
        dropout: float = 0.1,
        max_len: int = 256,
    ) -> None:
        super().__init__()
        self.embed = _Embedding(vocab_size, d_model, max_len, dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)  # last Linear: kept dense by the default skip

    def forward(self, ids: Tensor) -> Tensor:
        padding = ids == PAD
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, padding)
        return self.lm_head(self.norm(x))
