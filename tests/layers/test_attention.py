"""FactorizedMultiheadAttention against nn.MultiheadAttention and brute-force per-head products."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.layers.attention import FactorizedMultiheadAttention
from tests.helpers import assert_rel_close

E, H, D = 12, 3, 4  # embed dim, heads, head dim
CASES = {
    "self": {},
    "kvdim": {"kdim": 5, "vdim": 7},
    "small_kdim": {"kdim": 3, "vdim": 9},  # k_dim < d_h: the QK products have rank ≤ 3
    "nobias": {"bias": False},
}


def _full_rank(family: str, module: nn.MultiheadAttention) -> int | tuple[int, int]:
    return D if family == "lowrank" else (E, max(module.kdim, module.vdim))


def _dense(case: str, batch_first: bool) -> nn.MultiheadAttention:
    module = nn.MultiheadAttention(E, H, batch_first=batch_first, **CASES[case]).double()
    if module.in_proj_bias is not None:  # PyTorch initializes biases to 0, which would hide errors
        with torch.no_grad():
            module.in_proj_bias.normal_()
            module.out_proj.bias.normal_()
    return module


def _inputs(module: nn.MultiheadAttention, n: int = 2, tgt: int = 5, src: int = 6):
    q = torch.randn(tgt, n, E, dtype=torch.float64)
    k = torch.randn(src, n, module.kdim, dtype=torch.float64)
    v = torch.randn(src, n, module.vdim, dtype=torch.float64)
    if module.batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


def _masks(kind: str, n: int = 2, tgt: int = 5, src: int = 6) -> dict:
    padding = torch.zeros(n, src, dtype=torch.bool)
    padding[0, -2:] = True
    causal = torch.ones(tgt, src, dtype=torch.bool).triu(1)
    additive = torch.randn(n * H, tgt, src, dtype=torch.float64)
    return {
        "none": {},
        "padding": {"key_padding_mask": padding},
        "causal": {"attn_mask": causal},
        "both": {"key_padding_mask": padding, "attn_mask": causal},
        "float3d": {"attn_mask": additive, "key_padding_mask": padding},
    }[kind]


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # PyTorch's, for float3d
@pytest.mark.parametrize("family", ["lowrank", "tucker"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "padding", "causal", "both", "float3d"])
def test_full_rank_spectral_init_reproduces_dense_attention(family, case, batch_first, masks):
    dense = _dense(case, batch_first)
    layer = tdecomp.factorize(dense, family, _full_rank(family, dense))
    q, k, v = _inputs(dense)
    mask_kwargs = _masks(masks)
    for kwargs in ({"need_weights": True}, {"need_weights": True, "average_attn_weights": False},
                   {"need_weights": False}):
        want, want_w = dense(q, k, v, **mask_kwargs, **kwargs)
        got, got_w = layer(q, k, v, **mask_kwargs, **kwargs)
        assert_rel_close(got, want, 1e-10)
        if want_w is None:
            assert got_w is None
        else:
            assert_rel_close(got_w, want_w, 1e-10)


def test_unbatched_input_matches_dense():
    dense = _dense("kvdim", False)
    layer = tdecomp.factorize(dense, "lowrank", D)
    q, k, v = (t[:, 0] for t in _inputs(dense))
    mask = torch.ones(5, 6, dtype=torch.bool).triu(1)
    want, want_w = dense(q, k, v, attn_mask=mask)
    got, got_w = layer(q, k, v, attn_mask=mask)
    assert got.shape == (5, E) and got_w.shape == (5, 6)
    assert_rel_close(got, want, 1e-10)
    assert_rel_close(got_w, want_w, 1e-10)


def _brute_force_frobenius_sq(dense: nn.MultiheadAttention) -> torch.Tensor:
    """Σ_h ‖W_Q^h W_K^hᵀ‖² + ‖W_O^h W_V^hᵀ‖² from PyTorch's weight layout, head by head."""
    if dense._qkv_same_embed_dim:
        wq, wk, wv = dense.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = dense.q_proj_weight, dense.k_proj_weight, dense.v_proj_weight
    total = torch.zeros((), dtype=torch.float64)
    for h in range(H):
        rows = slice(h * D, (h + 1) * D)
        total = total + (wq[rows].T @ wk[rows]).square().sum()
        total = total + (dense.out_proj.weight[:, rows] @ wv[rows]).square().sum()
    return total


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rank", [1, 2, D])
def test_frobenius_sq_equals_brute_force_lowrank(case, rank):
    layer = tdecomp.factorize(_dense(case, False), "lowrank", rank, init="random")
    assert_rel_close(layer.frobenius_sq(), _brute_force_frobenius_sq(layer.to_dense()), 1e-10)


@pytest.mark.parametrize("rank", [(2, 3), (E, 9), (5, 1)])
def test_frobenius_sq_equals_brute_force_tucker(rank):
    layer = FactorizedMultiheadAttention(E, H, rank, kdim=5, vdim=9, family="tucker", dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for products in (layer.qk, layer.ov):
        for h in range(H):  # M_h = U G_h Vᵀ written out
            total = total + (products.U @ products.core[h] @ products.V.T).square().sum()
    assert_rel_close(layer.frobenius_sq(), total, 1e-10)
    assert layer.qk.rank == (min(rank[0], 3 * min(rank[1], 5)), min(rank[1], 5))  # clamped to k_dim


@pytest.mark.parametrize("family,rank", [("lowrank", 2), ("tucker", (4, 3))])
def test_gradients_reach_every_factor_and_bias(family, rank):
    dense = _dense("kvdim", True)
    layer = tdecomp.factorize(dense, family, rank)
    q, k, v = _inputs(dense)
    out, _ = layer(q, k, v, key_padding_mask=_masks("padding")["key_padding_mask"], need_weights=False)
    (out.square().sum() + layer.frobenius_sq()).backward()
    names = {n for n, _ in layer.named_parameters()}
    assert {"q_bias", "v_bias", "out_bias"} <= names
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", list(CASES))
def test_to_dense_round_trip(case):
    layer = tdecomp.factorize(_dense(case, True), "lowrank", 2, init="random")
    with torch.no_grad():
        for b in (layer.q_bias, layer.v_bias, layer.out_bias):
            if b is not None:
                b.normal_()
    dense = layer.to_dense()
    assert type(dense) is nn.MultiheadAttention and dense.batch_first
    q, k, v = _inputs(dense)
    masks = _masks("both")
    assert_rel_close(dense(q, k, v, **masks)[0], layer(q, k, v, **masks)[0], 1e-10)
    again = tdecomp.factorize(dense, "lowrank", D)  # and back: exact at full rank
    assert_rel_close(again(q, k, v, **masks)[0], layer(q, k, v, **masks)[0], 1e-10)


def test_tucker_to_dense_only_when_heads_fit():
    small = tdecomp.factorize(_dense("self", False), "tucker", (6, D), init="random")
    q, k, v = _inputs(small.to_dense())
    assert_rel_close(small.to_dense()(q, k, v)[0], small(q, k, v)[0], 1e-10)
    with pytest.raises(ValueError, match="head_dim=4"):
        tdecomp.factorize(_dense("self", False), "tucker", (6, 6)).to_dense()


def test_random_init_matches_dense_product_scale():
    dense = nn.MultiheadAttention(64, 4)
    exact = tdecomp.factorize(dense, "lowrank", 16)  # full rank: its products are the dense ones
    with torch.no_grad():
        for family, rank in (("lowrank", 4), ("tucker", (16, 16))):
            fresh = FactorizedMultiheadAttention(64, 4, rank, family=family)
            for name in ("qk", "ov"):
                want = getattr(exact, name).products().std()
                assert float(getattr(fresh, name).products().std() / want) == pytest.approx(1.0, abs=0.15)


def test_param_count_and_budget_ratio():
    dense = nn.MultiheadAttention(32, 2)
    layer = tdecomp.factorize(dense, "lowrank", 0.5)
    brute = sum(p.numel() for p in layer.parameters())
    assert layer.num_params == brute == 2 * 2 * 64 * 8 + 2 * 2 * 8 + 32  # factors, q/v biases, out bias
    assert layer.rank == (8,) and layer.param_ratio == pytest.approx(0.5, rel=0.02)


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="num_heads=5 must divide embed_dim=12"):
        FactorizedMultiheadAttention(12, 5, 1)
    with pytest.raises(ValueError, match=r"r must be in \[1, 4\]"):
        FactorizedMultiheadAttention(12, 3, 5)
    with pytest.raises(ValueError, match=r"r must be in \[1, 4\]"):
        FactorizedMultiheadAttention(12, 3, 0)
    with pytest.raises(ValueError, match=r"r_right must be in \[1, 12\]"):
        FactorizedMultiheadAttention(12, 3, (4, 13), family="tucker")
    with pytest.raises(ValueError, match="2 ints"):
        FactorizedMultiheadAttention(12, 3, (4, 4, 4), family="tucker")
    with pytest.raises(ValueError, match="family='tt' is not valid"):
        FactorizedMultiheadAttention(12, 3, 2, family="tt")
    with pytest.raises(ValueError, match="positive parameter ratio"):
        FactorizedMultiheadAttention(12, 3, -0.5)
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        tdecomp.factorize(nn.MultiheadAttention(12, 3, add_bias_kv=True), "lowrank", 2)


class _Block(nn.Module):
    """Self-attention followed by a feed-forward layer and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 2, batch_first=True)
        self.ff = nn.Linear(32, 32, bias=False)  # so rank 8 is exactly half its parameters
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head(torch.relu(self.ff(x))).mean(1)


@pytest.mark.parametrize("targets", [("attention",), ("linear", "attention"), ("linear",)])
def test_factorize_model_targets(targets):
    model = _Block()
    x = torch.randn(4, 6, 32)
    want = model(x)
    with warnings.catch_warnings():
        # a missed budget warns: an error for one target; with two, a rank step of this tiny
        # attention (4·E·H = 256 parameters, 5% of the budget) can miss ±2% at a common scale
        warnings.simplefilter("error" if len(targets) == 1 else "ignore")
        tdecomp.factorize_model(model, "lowrank", 0.5, targets=targets, progress=False)
    assert isinstance(model.attn, FactorizedMultiheadAttention) == ("attention" in targets)
    assert isinstance(model.ff, tdecomp.FactorizedLayer) == ("linear" in targets)
    assert type(model.head) is nn.Linear  # the classifier stays dense by default
    assert tdecomp.summarize(model).ratio == pytest.approx(0.5, rel=0.02 if len(targets) == 1 else 0.05)
    assert model(x).shape == want.shape
    groups = {g["name"]: g["params"] for g in tdecomp.param_groups(model, 1e-4, 1e-4)}
    if "attention" in targets:
        assert model.attn.qk.U in groups["factors"] and model.attn.q_bias in groups["no_decay"]
        collapsed = model(x)
        tdecomp.collapse_model(model)
        assert type(model.attn) is nn.MultiheadAttention
        assert_rel_close(model(x), collapsed, 1e-5)


def test_factorize_model_rejects_attention_with_matrix_only_family():
    with pytest.raises(ValueError, match="family='cp' is not valid; expected one of: 'lowrank', 'tucker'"):
        tdecomp.factorize_model(_Block(), "cp", 0.5, targets=("attention",), progress=False)
    with pytest.raises(ValueError, match="targets='mlp' is not valid"):
        tdecomp.factorize_model(_Block(), "lowrank", 0.5, targets=("mlp",), progress=False)


@pytest.mark.parametrize("family,rank", [("lowrank", 4), ("tucker", (8, 8))])
def test_a_few_training_steps_lower_the_loss(family, rank):
    torch.manual_seed(0)
    teacher = nn.MultiheadAttention(16, 2, batch_first=True)
    student = FactorizedMultiheadAttention(16, 2, rank, batch_first=True, family=family)
    x = torch.randn(16, 5, 16)
    target = teacher(x, x, x, need_weights=False)[0].detach()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (student(x, x, x, need_weights=False)[0] - target).square().mean()
        objective = loss + 0.5 * 1e-4 * tdecomp.frobenius_decay(student)
        opt.zero_grad()
        objective.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_drop_in_inside_torch_transformer_layers():
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, 24, batch_first=True), 2,
                                    enable_nested_tensor=False).double().eval()
    decoder = nn.TransformerDecoderLayer(E, H, 24, batch_first=True).double().eval()
    x, memory = torch.randn(2, 5, E, dtype=torch.float64), torch.randn(2, 4, E, dtype=torch.float64)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    want_enc, want_dec = encoder(x, src_key_padding_mask=padding), decoder(x, memory)
    for module in (encoder, decoder):
        tdecomp.factorize_model(module, "lowrank", D, targets=("attention",), progress=False)
    assert isinstance(encoder.layers[1].self_attn, FactorizedMultiheadAttention)
    assert isinstance(decoder.multihead_attn, FactorizedMultiheadAttention)
    assert_rel_close(encoder(x, src_key_padding_mask=padding), want_enc, 1e-10)
    assert_rel_close(decoder(x, memory), want_dec, 1e-10)
