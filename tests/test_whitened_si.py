"""Whitened SI (init="whitened"): the closed-form output-error optimum for low rank, the family's own SI
of the whitened weight for every family (the input space and the damping written out here), plain SI
when the inputs are white, and no worse output error than plain SI on small trained networks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdecomp
from tdecomp.init import equalizing_scales
from tdecomp.layers.whitening import LayerStats
from tests.helpers import FAMILIES, TinyCNN1d, make_dense

F64 = torch.float64
LOWRANK = "lowrank"


def _stats(module: nn.Module, x: torch.Tensor, damping: float = 1e-2) -> LayerStats:
    (stats,) = tdecomp.calibrate(module, [x], layers=[""], damping=damping).values()
    return stats


def _inputs_as_columns(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """X (d, samples): the vectors the layer multiplies, from the layer's own conv with a one-hot weight."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features).T
    d = module.weight[0].numel()
    probe = copy.deepcopy(module)
    probe.bias = None
    probe.weight = nn.Parameter(torch.eye(d, dtype=x.dtype).reshape(d, *module.weight.shape[1:]))
    return probe(x).movedim(1, -1).reshape(-1, d).T


@pytest.mark.parametrize("case,samples", [("linear", (40, 12)), ("conv1x1", (6, 6, 3, 3)),
                                          ("conv1d_k5_s2", (8, 6, 12)), ("conv1d_k3_reflect", (8, 5, 10))])
@pytest.mark.parametrize("rank", [2, 4])
def test_lowrank_whitened_si_is_the_closed_form_output_optimum(case, samples, rank):
    module, _ = make_dense(case)
    scales = torch.linspace(0.1, 3, samples[1], dtype=F64).reshape(-1, *(1,) * (len(samples) - 2))  # per channel
    x = torch.randn(samples, dtype=F64) * scales
    inputs = _inputs_as_columns(module, x).detach()  # (d, N), full row rank
    w = module.weight.detach().reshape(module.weight.shape[0], -1)  # the columns of a 1-D kernel: (i, k)
    layer = tdecomp.factorize(module, LOWRANK, rank, init="whitened", calibration=_stats(module, x, damping=0.0))
    approx = layer.reconstruct().detach().reshape(w.shape)
    # min_{rank r} ‖(W − Ŵ)X‖_F: Ŵ X is the best rank-r approximation of W X, so Ŵ = [W X]_r X⁺
    p, s, qh = torch.linalg.svd(w @ inputs, full_matrices=False)
    best = (p[:, :rank] * s[:rank]) @ qh[:rank] @ torch.linalg.pinv(inputs)
    torch.testing.assert_close(approx, best, rtol=1e-8, atol=1e-8 * float(w.abs().max()))
    error = (w - approx) @ inputs.detach()
    assert float(error.norm()) == pytest.approx(float(s[rank:].square().sum().sqrt()), rel=1e-8)
    # and balanced, as SI leaves it: UᵀU = VᵀV
    torch.testing.assert_close(layer.U.T @ layer.U, layer.V.T @ layer.V, rtol=1e-8, atol=1e-10)


def _input_space(family: str, module: nn.Module) -> tuple[int, ...]:
    """The weight axes each family's input factor indexes, written out: low rank's matricization columns
    (c_in and the kernel axes after the first ⌊d/2⌋ of size > 1), every other family's c_in."""
    if family != LOWRANK:
        return (1,)
    kernel = [a for a, k in enumerate(module.weight.shape[2:]) if k > 1]
    return (1, *(2 + a for a in kernel[len(kernel) // 2:]))


def _whitened(weight: torch.Tensor, axes: tuple[int, ...], root: torch.Tensor) -> torch.Tensor:
    """W with its axes ``axes`` (flattened in order) multiplied by ``root`` on the right, by einsum."""
    others = [a for a in range(weight.ndim) if a not in axes]
    moved = weight.permute(*others, *axes)
    flat = moved.reshape(*moved.shape[: len(others)], -1)
    out = torch.einsum("...i,ij->...j", flat, root).reshape(moved.shape)
    return out.permute(*torch.argsort(torch.tensor([*others, *axes])).tolist())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", ["linear", "conv3x3_s2_p1", "conv1d_k3_d2_p2", "conv1x5_s21_p12", "conv3d_k3_p1"])
def test_whitened_si_is_the_familys_si_of_the_whitened_weight(family, case):
    module, x = make_dense(case)
    x = x * torch.linspace(0.2, 2, x.shape[1], dtype=F64).reshape(-1, *(1,) * (x.ndim - 2))  # correlated scales
    x = torch.cat([x + 0.5 * x.roll(1, dims=1), x.flip(0) ** 2])
    rank = 0.4
    torch.manual_seed(1)
    layer = tdecomp.factorize(module, family, rank, init="whitened", calibration=_stats(module, x))
    # the oracle: C_S from the patches (each offset outside S one more sample), damped and scaled as documented
    axes = _input_space(family, module)
    inputs = _inputs_as_columns(module, x).T.detach()  # (samples, d)
    shape = module.weight.shape[1:]
    patch = inputs.reshape(-1, *shape)  # (samples, c_in, *k)
    rest = [a for a in range(1, len(shape) + 1) if a not in axes]  # patch dims outside S (0 = samples)
    vectors = patch.permute(0, *rest, *axes).reshape(-1, int(torch.tensor([shape[a - 1] for a in axes]).prod()))
    moment = vectors.T @ vectors / len(vectors)
    m = moment.diagonal().mean()
    root = torch.linalg.cholesky((moment + 1e-2 * m * torch.eye(len(moment), dtype=F64)) / (1.01 * m))
    # Ŵ ×_S Lᵀ is what the family's plain SI makes of W ×_S Lᵀ, i.e. Ŵ = SI(W ×_S Lᵀ) ×_S L⁻ᵀ …
    whitened = copy.deepcopy(module)
    with torch.no_grad():
        whitened.weight.copy_(_whitened(module.weight.detach(), axes, root))
    torch.manual_seed(1)
    expected = tdecomp.factorize(whitened, family, rank, init="spectral")
    assert layer.rank == expected.rank
    candidate = _whitened(expected.reconstruct().detach(), axes, torch.linalg.inv(root))
    exact = all(k == 1 for a, k in enumerate(shape[1:], start=2) if a not in axes)
    if not exact:  # … unless C_S only models C and plain SI has the smaller output error on the inputs
        torch.manual_seed(1)
        plain = tdecomp.factorize(module, family, rank).reconstruct().detach()
        flat = module.weight.detach().reshape(len(module.weight), -1)

        def output_error(approx: torch.Tensor) -> float:
            return float(((flat - approx.reshape(flat.shape)) @ inputs.T).norm())

        if output_error(plain) < output_error(candidate):
            candidate = plain
    torch.testing.assert_close(layer.reconstruct().detach(), candidate, rtol=1e-7, atol=1e-9)
    # balanced as SI leaves its factors: equal norms (per component for CP), nothing left to rescale
    scales = equalizing_scales(layer._balanced_norms().detach())
    torch.testing.assert_close(scales, torch.ones_like(scales), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", ["linear", "conv3x3_s1_p1", "conv1d_k5_s2"])
def test_white_inputs_give_plain_si(family, case):
    module, _ = make_dense(case)
    spec = tdecomp.DenseSpec.from_module(module)
    identity = LayerStats(spec, 7.0 * torch.eye(spec.fan_in, dtype=F64), count=7)  # C = I
    torch.manual_seed(1)
    plain = tdecomp.factorize(module, family, 0.4)
    torch.manual_seed(1)
    whitened = tdecomp.factorize(module, family, 0.4, init="whitened", calibration=identity)
    torch.testing.assert_close(whitened.reconstruct(), plain.reconstruct(), rtol=1e-9, atol=1e-12)
    for a, b in zip(whitened.factors(), plain.factors()):  # the same factors, up to the signs of the SVD's vectors
        torch.testing.assert_close(a.abs(), b.abs(), rtol=1e-7, atol=1e-9)


class TinyCNN2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2), nn.ReLU(),
                                   nn.Conv2d(12, 12, (1, 3), padding=(0, 1)), nn.ReLU())
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x).mean((2, 3)))


def _trained(model: nn.Module, shape: tuple[int, ...], classes: int) -> tuple[nn.Module, list[torch.Tensor]]:
    """``model`` trained 30 SGD steps on random data of fixed labels; its calibration batches."""
    model = model.double()
    x = torch.randn(64, *shape, dtype=F64)
    y = torch.randint(0, classes, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), [x[:32], x[32:]]


NETWORKS = {
    "cnn1d": lambda: _trained(TinyCNN1d(width=6), (1, 30), 10),
    "cnn2d": lambda: _trained(TinyCNN2d(), (3, 9, 9), 4),
    "mlp": lambda: _trained(nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                                          nn.Linear(16, 5)), (10,), 5),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_whitened_si_has_no_larger_output_error_on_any_layer(family, network):
    model, batches = NETWORKS[network]()
    stats = tdecomp.calibrate(model, batches)
    errors = {}
    for init in ("spectral", "whitened"):
        torch.manual_seed(2)
        compressed = tdecomp.factorize_model(copy.deepcopy(model), family, 0.3, init=init, calibration=stats,
                                             skip=(), progress=False)
        errors[init] = {}
        for name in stats:  # ‖(W − Ŵ)X‖/‖WX‖ on the calibration inputs, by brute force
            dense, layer = model.get_submodule(name), compressed.get_submodule(name)
            inputs = torch.cat([_layer_input(model, name, b) for b in batches])
            target = dense(inputs) - _bias(dense)
            approx = layer.spec.functional(inputs, layer.reconstruct().detach(), None)
            errors[init][name] = float((target - approx).norm() / target.norm())
    for name in stats:
        assert errors["whitened"][name] <= errors["spectral"][name] * (1 + 1e-9), (name, errors)
    assert sum(errors["whitened"].values()) < sum(errors["spectral"].values())


def _layer_input(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def _bias(module: nn.Module) -> torch.Tensor | float:
    if module.bias is None:
        return 0.0
    return module.bias.detach().reshape(-1, *(1,) * (module.weight.ndim - 2))


def test_whitened_init_errors_name_the_fix():
    model = TinyCNN1d()
    with pytest.raises(ValueError, match="reads calibration data.*'features.2' lacks.*tdecomp.calibrate"):
        tdecomp.factorize_model(model, LOWRANK, 0.3, init="whitened", progress=False)
    with pytest.raises(ValueError, match="calibration=stats"):
        tdecomp.factorize(model.features[2], LOWRANK, 2, init="whitened")
    with pytest.raises(ValueError, match="Linear and conv layers.*init='spectral'"):
        tdecomp.factorize(nn.MultiheadAttention(8, 2), LOWRANK, 2, init="whitened")
    stats = tdecomp.calibrate(model, [torch.randn(2, 1, 30)])
    with pytest.raises(ValueError, match="do not fit"):
        tdecomp.factorize(model.features[5], LOWRANK, 2, init="whitened", calibration=stats["features.2"])
