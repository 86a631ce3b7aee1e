"""The official Table-2 TT/Tucker block (microsoft/fnl_paper deficient-efficient), against its code's
formulas rewritten here: the 3-way reshape, ranks, parameter counts, init, the "crs" weight decay,
and against F.conv2d (forward) and the dense conv (collapse). docs/fidelity.md rows 24-26."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdecomp
from tdecomp import models
from tdecomp.config import load_config
from tdecomp.layers.separable import SeparableLayer, tensorize_shape
from tdecomp.layers.spec import DenseSpec
from tdecomp.regularize import param_groups
from tdecomp.train import Trainer

OFFICIAL_SCALES = {"tt": (0.234, 0.705), "tucker": (0.211, 0.68)}  # make.py:198


@pytest.fixture(autouse=True)
def _one_thread():
    """Many small SVDs (HOOI): one thread avoids oversubscription on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- official formulas, rewritten
def official_modes(c_out: int, c_in: int) -> list[int]:
    """decomposed.py:13-46 (dimensionize, closest_divisor) on the squeezed (c_out, c_in) weight, d = 3."""
    n = c_out * c_in
    e = math.exp((1.0 / 3) * math.log(n))
    if abs(round(e) - e) < 1e-6:
        return [int(round(e))] * 3
    dims = []
    for _ in range(2):
        d = int(round(e))
        if n >= d:
            while n % d != 0:
                d += 1
        else:
            d = n
        dims.append(d)
        n //= d
    return dims + [n]


def official_ranks(family: str, dims: list[int], s: float) -> tuple[int, ...]:
    """decomposed.py:36-37."""
    if family == "tt":
        return tuple(max(1, int(round(s * min(b, a)))) for b, a in zip(dims, dims[1:]))
    return tuple(max(1, int(round(s * d))) for d in dims)


def tensor_params(family: str, dims: list[int], r: tuple[int, ...]) -> int:
    """TT cores (1, d₀, r₁), (r₁, d₁, r₂), (r₂, d₂, 1); Tucker: a dense core Π r + factors Σ d·r."""
    if family == "tt":
        return dims[0] * r[0] + r[0] * dims[1] * r[1] + r[1] * dims[2]
    return math.prod(r) + sum(d * x for d, x in zip(dims, r))


def tntorch_tucker_params(dims: list[int], r: tuple[int, ...]) -> int:
    """What tntorch's Tensor(t, ranks_tucker=r) registers (tensor.py: _full_rank_tt, then
    round_tucker): factors d_k × t_k and the core kept as TT cores (R_{k−1}, t_k, R_k), its TT
    ranks only cut by the QRs of the sweep (redundant: R₁ can exceed t₀)."""
    d0, d1, d2 = dims
    big1, big2 = min(d0, d1 * d2), min(d0 * d1, d2)  # _full_rank_tt
    big1 = min(d0, big1)  # orthogonalize(-1): left QRs
    big2 = min(big1 * d1, big2)
    t2 = min(r[2], big2, d2)
    big2 = min(t2, big2)  # right_orthogonalize(2)
    t1 = min(r[1], big1 * big2, d1)
    big1 = min(big1, t1 * big2)  # right_orthogonalize(1)
    t0 = min(r[0], big1, d0)
    return d0 * t0 + d1 * t1 + d2 * t2 + t0 * big1 + big1 * t1 * big2 + big2 * t2


def official_wrn_convs(depth: int = 28, width: int = 10) -> tuple[list[tuple[int, int, int]], int]:
    """models/wide_resnet.py:71-105 + blocks.py:309-392: the block convs (c_in, c_out, k) in order
    (conv1, conv2, then the 1×1 shortcut when shapes change) and the dense parameter count."""
    widths, n = [16, 16 * width, 32 * width, 64 * width], (depth - 4) // 6
    convs, total = [], 3 * 16 * 9 + 2 * widths[3] + widths[3] * 10 + 10
    for stage in range(3):
        for block in range(n):
            c_in, c_out = widths[stage] if block == 0 else widths[stage + 1], widths[stage + 1]
            convs += [(c_in, c_out, 3), (c_out, c_out, 3)] + ([(c_in, c_out, 1)] if c_in != c_out else [])
            total += 2 * c_in + 2 * c_out  # bn1, bn2
    return convs, total + sum(i * o * k * k for i, o, k in convs)


def official_model_params(family: str, s: float, tntorch: bool = False, depth: int = 28, width: int = 10) -> int:
    """The WRN with every 3×3 block conv → depthwise c_in·9 + the (c_out, c_in) tensor; shortcuts
    dense. ``tntorch``: count Tucker as the official code's tntorch does."""
    convs, total = official_wrn_convs(depth, width)
    for c_in, c_out, k in convs:
        if k > 1:
            dims = official_modes(c_out, c_in)
            r = official_ranks(family, dims, s)
            count = tntorch_tucker_params(dims, r) if tntorch and family == "tucker" else tensor_params(family, dims, r)
            total += c_in * k * k + count - c_in * c_out * k * k
    return total


# ---------------------------------------------------------------- the WRN-28-10 grid, every run
def _meta_wrn28_10() -> nn.Module:
    with torch.device("meta"):
        return models.create("wrn28_10")


def test_official_formulas_give_the_papers_compression():
    """The rewritten formulas are the official ones: its scales land on 1/60 and 1/15 (the Conv ratios, make.py:198)."""
    _, dense = official_wrn_convs()
    assert dense == 36_479_194 == sum(p.numel() for p in _meta_wrn28_10().parameters())
    for family, (low, high) in OFFICIAL_SCALES.items():
        assert dense / official_model_params(family, low, tntorch=True) == pytest.approx(60, rel=0.003)
        assert dense / official_model_params(family, high, tntorch=True) == pytest.approx(15, rel=0.006)
    # ours holds the same Tucker ranks with a dense core (docs/fidelity.md row 24)
    assert dense / official_model_params("tucker", 0.211) == pytest.approx(82.36, abs=0.01)
    assert dense / official_model_params("tucker", 0.68) == pytest.approx(20.64, abs=0.01)


def test_modes_are_the_official_reshape():
    for c_out in range(1, 90, 3):
        for c_in in range(1, 90, 7):
            assert tensorize_shape(c_out, c_in) == tuple(official_modes(c_out, c_in)), (c_out, c_in)
    assert tensorize_shape(160, 16) == (16, 16, 10) and tensorize_shape(640, 640) == (80, 80, 64)


def test_separable_ranks_and_counts_at_wrn28_10_shapes():
    """Every separable run of tensor_wrn28_10_cifar10, per layer: modes, ranks, parameters."""
    from tests.test_fidelity import jobs

    model = _meta_wrn28_10()
    convs, _ = official_wrn_convs()
    specs = [DenseSpec.from_module(m) for n, m in model.named_modules() if n.endswith(("conv1", "conv2"))
             and n.startswith("blocks")]
    assert [(s.in_channels, s.out_channels) for s in specs] == [(i, o) for i, o, k in convs if k > 1]
    runs = [j.config for j in jobs("tensor_wrn28_10_cifar10") if j.config.separable]
    assert len(runs) == 2 * 2 * 2 * 3 * 3
    for c in runs:
        for spec in specs:
            dims = official_modes(spec.out_channels, spec.in_channels)
            layer_ranks = SeparableLayer.ranks_at_scale(spec, c.family, c.rank_scale)
            assert layer_ranks == official_ranks(c.family, dims, c.rank_scale), (c.family, c.rank_scale, spec)
            assert SeparableLayer.total_params(spec, c.family, layer_ranks) == (
                spec.in_channels * 9 + tensor_params(c.family, dims, layer_ranks))


def _factorized(family: str, scale, init: str = "random", depth: int = 10, width: int = 4, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = models.create("wrn", depth=depth, widen=width)
    return tdecomp.factorize_model(model, family, scale, init=init, separable=True, progress=False, **kw)


@pytest.mark.parametrize("family", ["tt", "tucker"])
def test_separable_wrn_has_the_official_layers_ranks_and_parameter_count(family):
    s = OFFICIAL_SCALES[family][1]
    model = _factorized(family, tdecomp.RankScale(s))
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, SeparableLayer)}
    assert sorted(blocks) == sorted(f"blocks.{b}.conv{j}" for b in range(3) for j in (1, 2))
    assert type(model.conv1) is nn.Conv2d and type(model.linear) is nn.Linear
    assert all(type(model.blocks[b].shortcut) is nn.Conv2d for b in range(3))  # 1×1 shortcuts dense
    for name, block in blocks.items():
        dims = official_modes(block.spec.out_channels, block.spec.in_channels)
        assert list(block.dims) == dims and block.rank == official_ranks(family, dims, s), name
    assert sum(p.numel() for p in model.parameters()) == official_model_params(family, s, depth=10, width=4)
    report = tdecomp.summarize(model)
    assert [r.name for r in report.layers] == list(blocks)  # the inner TT/Tucker layers are not reported


@pytest.mark.parametrize("family", ["tt", "tucker"])
def test_whole_model_budget_bisects_the_official_rank_scale(family):
    dense = sum(p.numel() for p in models.create("wrn", depth=10, widen=4).parameters())
    model = _factorized(family, 0.1, budget="model")
    assert sum(p.numel() for p in model.parameters()) / dense == pytest.approx(0.1, rel=0.02)


# ---------------------------------------------------------------- the block itself
def _oracle_pointwise(block: SeparableLayer) -> torch.Tensor:
    """P (c_out, c_in) from the factors by einsum over the official mode order (d₀, d₁, d₂)."""
    if block.family == "tt":
        a, b, c = block.pointwise.factors()
        tensor = torch.einsum("xia,ajb,bky->ijk", a, b, c)
    else:
        core, u0, u1, u2 = block.pointwise.factors()
        tensor = torch.einsum("abc,ia,jb,kc->ijk", core, u0, u1, u2)
    assert tensor.shape == tuple(block.dims)
    return tensor.reshape(block.spec.out_channels, block.spec.in_channels)  # row-major, decomposed.py:98


@pytest.mark.parametrize("family", ["tt", "tucker"])
@pytest.mark.parametrize("stride", [1, 2])
def test_block_forward_is_depthwise_then_pointwise_and_collapses_exactly(family, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 20, 3, stride=stride, padding=1, bias=True).double()
    block = tdecomp.factorize(conv, family, tdecomp.RankScale(0.5), separable=True)
    x = torch.randn(2, 12, 9, 8, dtype=torch.float64)
    depthwise = F.conv2d(x, block.depthwise.weight, stride=stride, padding=1, groups=12)
    expected = F.conv2d(depthwise, _oracle_pointwise(block)[:, :, None, None], conv.bias)
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    assert block.depthwise.weight.shape == (12, 1, 3, 3)
    torch.testing.assert_close(block.bias, conv.bias)
    dense = block.to_dense()
    assert type(dense) is nn.Conv2d and dense.weight.shape == conv.weight.shape
    torch.testing.assert_close(dense(x), expected, rtol=1e-10, atol=1e-12)


def test_collapse_model_gives_an_identical_dense_wrn():
    model = _factorized("tucker", tdecomp.RankScale(0.5), depth=10, width=1).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = model(x)
    tdecomp.collapse_model(model)
    assert not any(isinstance(m, (SeparableLayer, tdecomp.FactorizedLayer)) for m in model.modules())
    assert all(m.groups == 1 for m in model.modules() if isinstance(m, nn.Conv2d))
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["tt", "tucker"])
def test_init_is_a_decomposition_of_the_official_dense_draws(family):
    """Full ranks reconstruct the dense draw exactly: "random" (the official "regular") is
    U(±1/√c_in) (decomposed.py:100-112), "spectral" N(0, 2/c_out) (wide_resnet.py:114-119); the
    depthwise kernel N(0, 2/(9·c_in)) in both (wide_resnet.py:109-113)."""
    c_in, c_out = 64, 128
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    dims = official_modes(c_out, c_in)
    full = tuple(min(a, b) for a, b in zip(dims, dims[1:])) if family == "tt" else tuple(dims)
    for init in ("random", "spectral"):
        torch.manual_seed(1)
        block = tdecomp.factorize(conv.double(), family, full, init=init, separable=True)
        p = block.pointwise_weight().detach()
        torch.testing.assert_close(p, _oracle_pointwise(block).detach())
        if init == "random":
            bound = 1 / math.sqrt(c_in)
            assert p.abs().max() <= bound * (1 + 1e-9) and p.abs().max() > 0.98 * bound
            assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        else:
            assert p.std().item() == pytest.approx(math.sqrt(2 / c_out), rel=0.05)
            assert p.abs().max() > 3 / math.sqrt(c_in)  # a Gaussian, not the uniform draw
        assert block.depthwise.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * c_in)), rel=0.15)


def test_frobenius_decay_is_the_pointwise_norm_and_spares_the_depthwise_kernel():
    model = _factorized("tt", tdecomp.RankScale(0.5), depth=10, width=1).double()
    blocks = [m for m in model.modules() if isinstance(m, SeparableLayer)]
    fd = tdecomp.frobenius_decay(model)
    torch.testing.assert_close(fd, sum(_oracle_pointwise(b).square().sum() for b in blocks), rtol=1e-10, atol=0)
    fd.backward()
    assert all(b.depthwise.weight.grad is None for b in blocks)
    assert all(p.grad is not None for b in blocks for p in b.factor_parameters())


# ---------------------------------------------------------------- weight decay: reglr, crs, frob
def official_decay(name: str, reg: str, wd: float, ratio: float) -> float:
    """main.py:608-627 with models/wide_resnet.py:33-51 (group_lowrank): the tensor cores
    ('weight_core'/'weight_u', here the pointwise factors) get wd (reglr = --nocrswd), wd × the
    model's parameter ratio (crs) or 0 (frob = --wd2fd); everything else, the depthwise 'grouped'
    conv, BN and the classifier included, gets wd."""
    if ".pointwise." not in name:
        return wd
    return {"wd": wd, "crs": wd * ratio, "fd": 0.0}[reg]


@pytest.mark.parametrize("reg", ["wd", "crs", "fd"])
def test_trainer_decays_each_tensor_as_the_official_code(tmp_path, reg):
    cfg = load_config(None, dict(model="wrn", model_kwargs={"depth": 10, "widen": 1}, data="digits", subset=32,
                                 batch_size=32, epochs=1, weight_decay=5e-4, decay_norms=True, family="tucker",
                                 separable=True, rank_scale=0.5, init="random", reg=reg, progress=False,
                                 out=str(tmp_path)))
    trainer = Trainer(cfg)
    model = trainer.model
    ratio = sum(p.numel() for p in model.parameters()) / sum(
        p.numel() for p in models.create("wrn", depth=10, widen=1, in_channels=1).parameters())
    assert 0.01 < ratio < 0.5
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(decay) == len(names)
    for name, p in names.items():
        assert decay[id(p)] == pytest.approx(official_decay(name, reg, 5e-4, ratio), rel=1e-12), name
    assert (cfg.reg == "fd") == any(g.get("frobenius_decay", 0) > 0 for g in trainer.optimizer.param_groups)


def test_param_groups_scale_only_the_factors():
    model = _factorized("tt", tdecomp.RankScale(0.5), depth=10, width=1)
    for g in param_groups(model, 1e-3, factor_decay_scale=0.25, decay_norms=True):
        assert g["weight_decay"] == (2.5e-4 if g["name"] == "factors" else 1e-3)
