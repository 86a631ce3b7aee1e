"""Every family × dense layer × init × implementation against independent oracles."""

from __future__ import annotations

import math

import pytest
import tensorly as tl
import torch
from torch import nn
from torch.func import functional_call

import tdecomp
from tdecomp.layers.walk import call_with
from tests.helpers import (
    DENSE_CASES,
    FAMILIES,
    assert_rel_close,
    hosvd_error,
    make_dense,
    matricize,
    relative_error,
)

CASES = tuple(DENSE_CASES)


def dense_oracle(module: nn.Module, layer: tdecomp.FactorizedLayer, x: torch.Tensor) -> torch.Tensor:
    """The original PyTorch module run with the reconstructed weight (no tdecomp code involved)."""
    params = {"weight": layer.reconstruct()}
    if module.bias is not None:
        params["bias"] = layer.bias
    return functional_call(module, params, (x,))


@pytest.mark.parametrize("implementation", ["factorized", "reconstructed", "auto"])
@pytest.mark.parametrize("init", ["spectral", "random"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_equals_dense_op_with_reconstructed_weight(family, case, init, implementation):
    module, x = make_dense(case)
    layer = tdecomp.factorize(module, family, 0.5, init=init, implementation=implementation)
    out = layer(x)
    assert_rel_close(out, dense_oracle(module, layer, x), 1e-10, f"{family}/{case} forward")
    out.square().sum().backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_frobenius_sq_and_its_gradient_equal_brute_force(family, case):
    module, _ = make_dense(case)
    layer = tdecomp.factorize(module, family, 0.7)
    params = list(layer.factor_parameters())
    fast = layer.frobenius_sq()
    brute = layer.reconstruct().pow(2).sum()
    assert torch.allclose(fast, brute, rtol=1e-10, atol=0)
    g_fast = torch.autograd.grad(fast, params)
    g_brute = torch.autograd.grad(brute, params)
    for a, b in zip(g_fast, g_brute):
        assert_rel_close(a, b, 1e-10, f"{family} d‖W‖²/dfactor")


@pytest.mark.parametrize("family", FAMILIES)
def test_frobenius_sq_gradient_matches_finite_differences(family):
    layer = tdecomp.factorize(nn.Conv2d(3, 4, 3).double(), family, 2)
    names = [n for n, _ in layer.named_parameters() if not n.endswith("bias")]
    factors = tuple(p.detach().clone().requires_grad_() for n, p in layer.named_parameters() if n in names)
    assert torch.autograd.gradcheck(lambda *fs: call_with(layer, "frobenius_sq", dict(zip(names, fs))), factors)


def _tensorly_reconstruction(layer: tdecomp.FactorizedLayer) -> torch.Tensor:
    """tensorly's own ``*_to_tensor`` on the layer's tltorch factors, in the dense weight's layout
    (the factors cover the kernel axes of size > 1 only: the reshape restores the size-1 axes)."""
    with tl.backend_context("pytorch"):
        if layer.family == "cp":
            tensor = tl.cp_to_tensor((layer.decomposition.weights, list(layer.decomposition.factors)))
        elif layer.family == "tucker":
            tensor = tl.tucker_to_tensor((layer.decomposition.core, list(layer.decomposition.factors)))
        else:
            tensor = tl.tt_to_tensor(list(layer.decomposition.factors)).movedim(-1, 0)  # TT order (c_in, …, c_out)
    return tensor.reshape(layer.spec.weight_shape)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", ["cp", "tucker", "tt"])
def test_tensor_reconstruction_equals_tensorly(family, case):
    module, _ = make_dense(case)
    layer = tdecomp.factorize(module, family, 0.6, init="random")
    assert_rel_close(layer.reconstruct(), _tensorly_reconstruction(layer), 1e-12, family)
    assert layer.reconstruct().shape == module.weight.shape


@pytest.mark.parametrize("case", CASES)
def test_lowrank_spectral_init_is_eckart_young_optimal_and_balanced(case):
    module, _ = make_dense(case)
    w = module.weight.detach()
    layer = tdecomp.factorize(module, "lowrank", 2)
    s = torch.linalg.svdvals(matricize(w))
    optimum = s[2:].square().sum().sqrt()
    assert torch.allclose((layer.reconstruct() - w).norm(), optimum, rtol=1e-9)
    gu, gv = layer.U.T @ layer.U, layer.V.T @ layer.V
    assert_rel_close(gu, gv, 1e-9, "UᵀU vs VᵀV (balanced)")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", ["lowrank", "tucker", "tt"])
def test_full_rank_spectral_init_is_exact_and_forward_equals_dense(family, case):
    module, x = make_dense(case)
    if family == "lowrank":  # beyond min(m, n) lowrank turns overcomplete instead of clamping
        layer = tdecomp.factorize(module, family, min(matricize(module.weight).shape))
    else:
        with pytest.warns(UserWarning, match="exceeds the maximum"):
            layer = tdecomp.factorize(module, family, 10_000)
    assert_rel_close(layer.reconstruct(), module.weight, 1e-10, f"{family} full-rank SI")
    assert_rel_close(layer(x), module(x), 1e-10, f"{family} full-rank forward")


@pytest.mark.parametrize("ranks", [(3, 4, 3, 3), (5, 2, 3, 3), (2, 2, 2, 2)])
def test_tucker_spectral_init_is_no_worse_than_hosvd(ranks):
    module = nn.Conv2d(6, 8, 3).double()
    layer = tdecomp.factorize(module, "tucker", ranks)
    w = module.weight.detach()
    err = relative_error(layer.reconstruct().detach(), w)
    assert err <= hosvd_error(w, ranks) + 1e-12


def test_cp_spectral_init_on_a_linear_layer_is_the_truncated_svd():
    module = nn.Linear(12, 10).double()
    w = module.weight.detach()
    layer = tdecomp.factorize(module, "cp", 4)
    optimum = torch.linalg.svdvals(w)[4:].square().sum().sqrt()
    assert torch.allclose((layer.reconstruct() - w).norm(), optimum, rtol=1e-6)


@pytest.mark.parametrize("family,ranks", [("cp", 3), ("tucker", (3, 2, 2, 3)), ("tt", (2, 3, 2))])
def test_spectral_init_recovers_a_weight_of_that_exact_rank(family, ranks):
    """Plant a weight that is exactly of the family's form: SI must find it (error ≪ 1)."""
    module = nn.Conv2d(6, 8, 3).double()
    planted = tdecomp.factorize(module, family, ranks, init="random").reconstruct().detach()
    with torch.no_grad():
        module.weight.copy_(planted)
    layer = tdecomp.factorize(module, family, ranks)
    tol = 1e-2 if family == "cp" else 1e-10  # ALS converges, HOOI and TT-SVD are exact
    assert_rel_close(layer.reconstruct(), planted, tol, f"{family} planted recovery")


@pytest.mark.parametrize("family", FAMILIES)
def test_random_init_matches_the_dense_weight_variance(family):
    module = nn.Conv2d(64, 64, 3)
    layer = tdecomp.factorize(module, family, 0.25, init="random")
    ratio = float(layer.reconstruct().std() / module.weight.std())
    assert 0.7 < ratio < 1.4, f"reconstructed std / dense std = {ratio:.3f}"


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_construction_holds_default_scale_never_garbage(family):
    spec = tdecomp.DenseSpec.from_module(nn.Conv2d(64, 64, 3))
    cls = tdecomp.get_family(family)
    layer = cls(spec, cls.resolve_rank(spec, 0.25))
    w = layer.reconstruct()
    assert torch.isfinite(w).all()
    ratio = float(w.std()) / spec.default_std
    assert 0.7 < ratio < 1.4, f"reconstructed std / default std = {ratio:.3f}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_to_dense_state_dict_and_param_count(family, case):
    module, x = make_dense(case)
    layer = tdecomp.factorize(module, family, 0.5)
    dense = layer.to_dense()
    assert type(dense) is type(module)
    assert_rel_close(dense(x), layer(x), 1e-10, "to_dense output")
    # state_dict round-trip into a freshly built layer of the same ranks
    clone = type(layer)(layer.spec, layer.rank, dtype=torch.float64)
    clone.load_state_dict(layer.state_dict())
    assert_rel_close(clone(x), layer(x), 0.0 + 1e-15, "state_dict round-trip")
    # parameter accounting
    counted = sum(p.numel() for p in layer.parameters())
    assert layer.num_params == counted
    bias = layer.spec.out_channels if module.bias is not None else 0
    assert counted == type(layer).count_params(layer.spec, layer.rank) + bias
    assert layer.param_ratio == pytest.approx(counted / sum(p.numel() for p in module.parameters()))


@pytest.mark.parametrize("family", FAMILIES)
def test_float_rank_hits_the_parameter_ratio(family):
    module = nn.Conv2d(128, 256, 3)
    for ratio in (0.05, 0.1, 0.25, 0.5):
        layer = tdecomp.factorize(module, family, ratio)
        weights = type(layer).count_params(layer.spec, layer.rank)
        assert weights / module.weight.numel() == pytest.approx(ratio, rel=0.05)


@pytest.mark.parametrize("family", ["lowrank", "cp"])
def test_float_rank_picks_the_closest_single_rank(family):
    module = nn.Conv2d(48, 96, 3)
    cls = tdecomp.get_family(family)
    spec = tdecomp.DenseSpec.from_module(module)
    for ratio in (0.03, 0.1, 0.37):
        (r,) = cls.resolve_rank(spec, ratio)
        target = ratio * module.weight.numel()
        miss = [abs(cls.count_params(spec, (k,)) - target) for k in (r - 1, r, r + 1)]
        assert miss[1] <= min(miss), f"rank {r} is not the closest to ratio {ratio}: {miss}"


def test_lowrank_overcomplete_is_exact_and_collapses():
    module = nn.Conv2d(4, 6, 3, padding=1).double()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    layer = tdecomp.factorize(module, "lowrank", 3.0)  # ratio 3 > 1: overcomplete U M Vᵀ
    assert layer.overcomplete and layer.rank[0] > 12
    assert_rel_close(layer.reconstruct(), module.weight, 1e-10, "overcomplete SI")
    assert_rel_close(layer(x), module(x), 1e-10, "overcomplete forward")
    # balanced three-factor product: UᵀU = M Mᵀ and MᵀM = VᵀV
    u, m, v = layer.U, layer.M, layer.V
    assert_rel_close(u.T @ u, m @ m.T, 1e-9, "UᵀU vs MMᵀ")
    assert_rel_close(m.T @ m, v.T @ v, 1e-9, "MᵀM vs VᵀV")
    with torch.no_grad():  # train-like perturbation, then collapse
        for p in layer.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert_rel_close(layer.to_dense()(x), layer(x), 1e-10, "collapsed overcomplete")
    brute = layer.to_dense().weight.pow(2).sum()
    assert_rel_close(layer.frobenius_sq(), brute, 1e-10, "overcomplete ‖U M Vᵀ‖²")


@pytest.mark.parametrize("family", FAMILIES)
def test_dtype_and_repr(family):
    layer = tdecomp.factorize(nn.Conv2d(6, 8, 3).to(torch.float64), family, 0.5)
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    text = repr(layer)
    assert f"family={family}" in text and f"rank={layer.rank}" in text and "of dense" in text



def _copy_weight(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(weight.reshape(module.weight.shape))
    return module.double()


@pytest.mark.parametrize("family", FAMILIES)
def test_size_one_kernel_axes_get_no_factor(family):
    """A (1, 5) or (5, 1) Conv2d is factorized exactly like a Conv1d(k=5), a 1×1 conv like a Linear."""
    conv1d, linear = nn.Conv1d(6, 8, 5).double(), nn.Linear(6, 8).double()
    pairs = [
        (conv1d, _copy_weight(nn.Conv2d(6, 8, (1, 5)), conv1d.weight)),
        (conv1d, _copy_weight(nn.Conv2d(6, 8, (5, 1)), conv1d.weight)),
        (conv1d, _copy_weight(nn.Conv3d(6, 8, (1, 5, 1)), conv1d.weight)),
        (linear, _copy_weight(nn.Conv2d(6, 8, 1), linear.weight)),
    ]
    for reference, module in pairs:
        torch.manual_seed(0)
        expected = tdecomp.factorize(reference, family, 0.4)
        torch.manual_seed(0)
        layer = tdecomp.factorize(module, family, 0.4)
        assert len(layer.rank_names(layer.spec)) == len(expected.rank_names(expected.spec))
        assert layer.rank == expected.rank
        assert [f.shape for f in layer.factors()] == [f.shape for f in expected.factors()]
        for a, b in zip(layer.factors(), expected.factors()):
            assert_rel_close(a, b, 1e-10, f"{family} factor of {module}")
        assert layer.reconstruct().shape == module.weight.shape


FACTORS_3X3 = {  # nn.Conv2d(6, 8, 3) at explicit ranks: the layout every 2-D kernel keeps
    "lowrank": ((4,), ("r",), [(24, 4), (18, 4)]),
    "cp": ((5,), ("R",), [(8, 5), (6, 5), (3, 5), (3, 5)]),
    "tucker": ((4, 3, 2, 3), ("c_out", "c_in", "k_h", "k_w"), [(4, 3, 2, 3), (8, 4), (6, 3), (3, 2), (3, 3)]),
    "tt": ((3, 4, 5), ("c_in|k_h", "k_h|k_w", "k_w|c_out"), [(1, 6, 3), (3, 3, 4), (4, 3, 5), (5, 8, 1)]),
    "tensor_ring": ((3, 4, 5), ("c_in|k_h", "k_h|k_w", "k_w|c_out"), [(2, 6, 3), (3, 3, 4), (4, 3, 5), (5, 8, 2)]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_3x3_conv_keeps_one_factor_per_mode(family):
    rank, names, shapes = FACTORS_3X3[family]
    layer = tdecomp.factorize(nn.Conv2d(6, 8, 3), family, rank)
    assert layer.rank == rank and layer.rank_names(layer.spec) == names
    assert [tuple(f.shape) for f in layer.factors()] == shapes


@pytest.mark.parametrize(
    "module,names",
    [
        (nn.Conv1d(6, 8, 3), ("c_out", "c_in", "k")),
        (nn.Conv2d(6, 8, (1, 3)), ("c_out", "c_in", "k_w")),
        (nn.Conv3d(6, 8, 3), ("c_out", "c_in", "k_d", "k_h", "k_w")),
        (nn.Conv3d(6, 8, (3, 1, 2)), ("c_out", "c_in", "k_d", "k_w")),
    ],
)
def test_rank_tuples_follow_the_kernel_modes_of_size_above_one(module, names):
    assert tdecomp.get_family("tucker").rank_names(tdecomp.DenseSpec.from_module(module)) == names
    with pytest.raises(ValueError, match=f"must have {len(names)} entries"):
        tdecomp.factorize(module, "tucker", (2,) * (len(names) + 1))


def _kaiming_stds(family: str, layer: tdecomp.FactorizedLayer) -> dict[tuple[int, ...], float]:
    """Decision C rewritten: each factor's N(0, 2/fan_in), fan_in = what it contracts in the forward."""
    c_out, c_in, *kernel = layer.spec.tensor_shape
    if family == "cp":
        (r,) = layer.rank
        return {(c_in, r): (2 / c_in) ** 0.5, (c_out, r): (2 / r) ** 0.5, **{(k, r): (2 / k) ** 0.5 for k in kernel}}
    if family == "tucker":
        r_out, r_in, *r_kernel = layer.rank
        return {(c_in, r_in): (2 / c_in) ** 0.5, (r_out, r_in, *r_kernel): (2 / (r_in * math.prod(r_kernel))) ** 0.5,
                **{(k, rk): (2 / rk) ** 0.5 for k, rk in zip(kernel, r_kernel)}, (c_out, r_out): (2 / r_out) ** 0.5}
    bonds = (1, *layer.rank, 1)  # TT cores over (c_in, *kernel, c_out)
    modes = (c_in, *kernel, c_out)
    stds = {(a, n, b): (2 / (a * n)) ** 0.5 for a, n, b in zip(bonds, modes, bonds[1:])}
    return stds | {(bonds[-2], c_out, 1): (2 / bonds[-2]) ** 0.5}


@pytest.mark.parametrize("family", ["cp", "tucker", "tt"])
def test_kaiming_factors_draws_each_factor_at_its_forward_fan_in(family, monkeypatch):
    """Every factor is drawn once, N(0, 2/fan_in) with the fan-in of the map it applies (HANDBOOK C)."""
    conv = nn.Conv2d(6, 10, (3, 5))
    drawn = []
    original = torch.Tensor.normal_
    monkeypatch.setattr(torch.Tensor, "normal_", lambda t, mean=0.0, std=1.0, **kw: (
        drawn.append((tuple(t.shape), mean, std)), original(t, mean, std, **kw))[1])
    layer = tdecomp.factorize(conv, family, 0.4, init="kaiming-factors", fixed_spatial=False) if family == "tucker" \
        else tdecomp.factorize(conv, family, 0.4, init="kaiming-factors")
    drawn = drawn[len(drawn) - len(layer.factors()):]  # construction's default init comes first
    expected = _kaiming_stds(family, layer)
    assert sorted(s for s, _, _ in drawn) == sorted(tuple(f.shape) for f in layer.factors())
    for shape, mean, std in drawn:
        assert mean == 0.0 and std == pytest.approx(expected[shape], rel=1e-12), (family, shape)
    if family == "cp":
        assert (layer.decomposition.weights == 1).all()


@pytest.mark.parametrize("closing", [1, 3])
def test_the_test_family_honours_its_option(closing):
    """The tensor ring's ``closing_rank`` reaches its parameters, forward and SI; at 1 the ring is a TT."""
    module, x = make_dense("conv3x2_s21_reflect")
    layer = tdecomp.factorize(module, "tensor_ring", 0.5, closing_rank=closing, implementation="factorized")
    assert layer.family_options == {"closing_rank": closing}
    first, *_, last = layer.factors()
    assert first.shape[0] == last.shape[2] == closing
    weights = sum(f.numel() for f in layer.factors())
    assert type(layer).count_params(layer.spec, layer.rank, closing_rank=closing) == weights
    assert type(layer).count_params(layer.spec, layer.rank) != weights  # the default is 2
    assert_rel_close(layer(x), dense_oracle(module, layer, x), 1e-10, f"ring closing {closing}")
    if closing == 1:
        tt = tdecomp.factorize(module, "tt", layer.rank)
        assert_rel_close(layer.reconstruct(), tt.reconstruct(), 1e-8, "a ring closed by a bond of 1 is TT-SVD's TT")
