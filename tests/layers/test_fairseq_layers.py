"""FactorizedEmbedding and the fairseq fork's head-reduced attention against independent oracles:
F.embedding of the reconstructed table, brute-force norms, torch.linalg.svd truncation, and the
official forward / spectral init (microsoft/fnl_paper transformer.py:262-386, frob.py:66-76)
rewritten here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdecomp
from tdecomp.layers.attention.reduced import HeadReducedAttention
from tdecomp.layers.embedding import FactorizedEmbedding
from tdecomp.regularize import frobenius_decay


@pytest.fixture(autouse=True)
def _float64():  # the oracles compare to 1e-10
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _embedding(n: int = 23, d: int = 12, pad: int | None = 0) -> nn.Embedding:
    torch.manual_seed(0)
    return nn.Embedding(n, d, padding_idx=pad)


@pytest.mark.parametrize("init", ["spectral", "random", "fairseq-factors"])
def test_embedding_forward_is_a_lookup_of_the_reconstructed_table(init):
    layer = tdecomp.factorize(_embedding(), "lowrank", 5, init=init)
    ids = torch.randint(0, 23, (4, 9))
    table = layer.U @ layer.V.T
    torch.testing.assert_close(layer(ids), F.embedding(ids, table), rtol=1e-12, atol=1e-12)
    assert layer.macs(ids.shape) == 4 * 9 * 5 * 12  # ids × r × d
    dense = tdecomp.collapse_model(nn.Sequential(layer))[0]
    assert type(dense) is nn.Embedding and dense.padding_idx == 0
    torch.testing.assert_close(dense(ids), layer(ids), rtol=1e-12, atol=1e-12)


def test_embedding_frobenius_norm_is_brute_force():
    layer = tdecomp.factorize(_embedding(), "lowrank", 5, init="random")
    u, v = layer.U.detach(), layer.V.detach()
    brute = sum(float(u[i] @ v[j]) ** 2 for i in range(23) for j in range(12))
    assert float(layer.frobenius_sq().detach()) == pytest.approx(brute, rel=1e-12)


def test_embedding_si_is_the_truncated_svd():
    """frob.py:66-70: U = P_r Σ_r^{1/2}, Vᵀ = Σ_r^{1/2} Q_rᵀ of the table."""
    dense = _embedding()
    r = 5
    layer = FactorizedEmbedding.from_dense(dense, r, init="spectral")
    p, s, qh = torch.linalg.svd(dense.weight.detach(), full_matrices=False)
    torch.testing.assert_close(layer.reconstruct(), p[:, :r] @ torch.diag(s[:r]) @ qh[:r], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer.U.T @ layer.U, torch.diag(s[:r]), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer.V.T @ layer.V, torch.diag(s[:r]), rtol=1e-10, atol=1e-10)


def test_embedding_rank_scale_and_per_factor_init():
    """frob.py:101 r = round(s·min(N, d)); singleprocess_train.py:61 both factors N(0, 0.1)."""
    big = nn.Embedding(1024, 256)
    layer = tdecomp.factorize(big, "lowrank", tdecomp.RankScale(0.25), init="fairseq-factors")
    assert layer.U.shape == (1024, 64) and layer.V.shape == (256, 64)
    for factor in (layer.U.detach(), layer.V.detach()):
        assert abs(float(factor.mean())) < 0.005 and float(factor.std()) == pytest.approx(0.1, rel=0.03)
    with pytest.raises(ValueError, match="no overcomplete form"):
        tdecomp.factorize(_embedding(), "lowrank", 13)
    with pytest.raises(ValueError, match="low-rank tables only"):
        tdecomp.factorize(_embedding(), "cp", 3)


def test_embedding_padding_row_gets_no_gradient():
    layer = tdecomp.factorize(_embedding(), "lowrank", 5, init="random")
    layer(torch.tensor([[0, 3, 0, 7]])).sum().backward()
    assert float(layer.U.grad[0].abs().sum()) == 0 and float(layer.U.grad[3].abs().sum()) > 0
    assert float(layer.V.grad.abs().sum()) > 0


# ---------------------------------------------------------------- head-reduced attention
def _official_attention(att: HeadReducedAttention, x, memory, bias):
    """transformer.py:352-386 on Linear weights laid out as the fork's (QueKey/OutVal get_UVT:
    Q, K, V (H·r, d) with head h in rows h·r…, O (d, H·r))."""
    qk, ov = att.quekey.pairs, att.outval.pairs
    heads, _, r = qk.U.shape
    wq = torch.cat([qk.U[h].T for h in range(heads)])
    wk = torch.cat([qk.V[h].T for h in range(heads)])
    wv = torch.cat([ov.V[h].T for h in range(heads)])
    wo = torch.cat([ov.U[h] for h in range(heads)], dim=1)
    q, k, v = F.linear(x, wq) * r**-0.5, F.linear(memory, wk), F.linear(memory, wv)
    out = []
    for h in range(heads):
        cols = slice(h * r, (h + 1) * r)
        logits = q[..., cols] @ k[..., cols].transpose(1, 2)
        if bias is not None:
            logits = logits + bias
        out.append(torch.softmax(logits, -1) @ v[..., cols])
    return F.linear(torch.cat(out, 2), wo)


@pytest.mark.parametrize("scale", [0.0, 0.25, 0.5])
def test_head_reduced_attention_is_the_official_forward(scale):
    torch.manual_seed(0)
    att = HeadReducedAttention(16, 4, rank_scale=scale)
    assert att.quekey.pairs.U.shape == (4, 16, int(scale * 16 / 4) if scale else 4)  # transformer.py:337
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    bias = torch.zeros(2, 1, 7)
    bias[0, 0, 5:] = -1e9
    torch.testing.assert_close(att(x, memory, bias), _official_attention(att, x, memory, bias), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(att(x), _official_attention(att, x, x, None), rtol=1e-10, atol=1e-10)


def test_head_reduced_attention_init_is_the_officials():
    """Random: every factor entry U(−0.1, 0.1) (transformer.py:542); spectral: batch_spectral_init
    (frob.py:73-76), the SVD of each rank-r product truncated at r: products kept, factors balanced."""
    torch.manual_seed(0)
    plain = HeadReducedAttention(32, 4, rank_scale=0.5)
    torch.manual_seed(0)
    spectral = HeadReducedAttention(32, 4, rank_scale=0.5, spectral=True)
    for a, b in ((plain.quekey, spectral.quekey), (plain.outval, spectral.outval)):
        u, v = a.pairs.U.detach(), a.pairs.V.detach()
        assert float(u.abs().max()) <= 0.1 and float(v.abs().max()) <= 0.1
        torch.testing.assert_close(b.pairs.products(), u @ v.mT, rtol=1e-10, atol=1e-10)
        for h in range(4):
            _, s, _ = torch.linalg.svd(u[h] @ v[h].T)
            diag = torch.diag(s[:4])
            torch.testing.assert_close(b.pairs.U[h].T @ b.pairs.U[h], diag, rtol=1e-8, atol=1e-10)
            torch.testing.assert_close(b.pairs.V[h].T @ b.pairs.V[h], diag, rtol=1e-8, atol=1e-10)


@torch.no_grad()
def test_fd_skip_leaves_out_the_named_products():
    """frob.py:51-63: modules whose name ends with a skiplist entry get no FD; brute force Σ‖L_h R_hᵀ‖²."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"att": HeadReducedAttention(16, 4, rank_scale=0.5), "fc": nn.Linear(16, 8)})
    tdecomp.factorize_model(model, "lowrank", 3, targets=["linear"], skip=[], progress=False)

    def brute(pairs):
        return sum(float((pairs.U[h] @ pairs.V[h].T).pow(2).sum()) for h in range(4))

    fc = float((model["fc"].U @ model["fc"].V.T).pow(2).sum())
    qk, ov = brute(model["att"].quekey.pairs), brute(model["att"].outval.pairs)
    assert float(frobenius_decay(model)) == pytest.approx(fc + qk + ov, rel=1e-10)
    assert float(frobenius_decay(model, ["quekey"])) == pytest.approx(fc + ov, rel=1e-10)
    assert float(frobenius_decay(model, ["quekey", "outval"])) == pytest.approx(fc, rel=1e-10)


# ---------------------------------------------------------------- the whole model
def _official_model_forward(model, src, tgt):
    """transformer.py:114-133 (encoder), 203-245 (decoder), 456-473 (FFN, residual),
    layer_normlization.py (γ(x − μ)/(σ_unbiased + 1e-6) + β), utils.make_positions (right padding)."""
    def norm(ln, x):
        return ln.gamma * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6) + ln.beta

    def positions(ids):
        arange = torch.arange(1, ids.shape[1] + 1).expand_as(ids)  # padding_idx + 1 + t, padding_idx = 0
        return torch.where(ids != 0, arange, 0)

    def embed(coder, ids):
        return coder.embed_tokens(ids) + coder.embed_positions(positions(ids))

    def ffn(f, x):
        return F.linear(torch.relu(F.linear(x, f.fc1.weight)), f.fc2.weight)

    pad_bias = lambda ids: (ids == 0)[:, None, :].double().expand(-1, ids.shape[1], -1) * -1e9  # noqa: E731
    x = embed(model.encoder, src)
    for block, (n1, n2) in zip(model.encoder.blocks, model.encoder.norms):
        h = norm(n1, x)
        x = x + _official_attention(block["self"], h, h, pad_bias(src))
        x = x + ffn(block["ffn"], norm(n2, x))
    memory = norm(model.encoder.out_norm, x)
    t = tgt.shape[1]
    bias = pad_bias(tgt) + torch.triu(torch.ones(t, t), diagonal=1) * -1e9
    y = embed(model.decoder, tgt)
    for block, (n1, n2, n3) in zip(model.decoder.blocks, model.decoder.norms):
        h = norm(n1, y)
        y = y + _official_attention(block["self"], h, h, bias)
        y = y + _official_attention(block["cross"], norm(n2, y), memory, None)  # no mask (transformer.py:239)
        y = y + ffn(block["ffn"], norm(n3, y))
    return F.linear(norm(model.decoder.out_norm, y), model.out_embed.weight, model.out_embed.bias)


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_fairseq_model_is_the_forks_forward(scale):
    torch.manual_seed(0)
    model = tdecomp.models.create("transformer_small_fairseq", src_vocab=11, tgt_vocab=13, d_model=16, heads=4,
                                  ffn_dim=24, max_positions=32, rank_scale=scale).eval()
    src = torch.tensor([[3, 4, 5, 6, 2], [7, 8, 2, 0, 0]])
    tgt = torch.tensor([[1, 5, 6, 7], [1, 9, 0, 0]])
    torch.testing.assert_close(model(src, tgt), _official_model_forward(model, src, tgt), rtol=1e-9, atol=1e-9)
