"""Half-precision layers (SI in float32, FD, rebalance, the tracked quantities) and shape-only surgery on
the meta device (issue 21 item 5)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES, TinyResNet, assert_rel_close

HALF = {torch.bfloat16: 2e-2, torch.float16: 3e-3}  # relative tolerance: a few units of the format's rounding
MODULES = {"linear": (lambda: nn.Linear(12, 10), (4, 12)),
           "conv": (lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 5, 5))}


def _float32(layer: nn.Module) -> nn.Module:
    """The oracle layer: the same factors in float32."""
    return copy.deepcopy(layer).float()


@pytest.mark.parametrize("kind", MODULES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_layers_decompose_train_decay_and_report(family, dtype, kind):
    build, shape = MODULES[kind]
    dense = build().to(dtype)
    tol = HALF[dtype]
    torch.manual_seed(1)
    # SI of the same values in float32 (at 0.3 CP's R < c_out: no random seed components to differ)
    reference = tdecomp.factorize(copy.deepcopy(dense).float(), family, 0.3)
    torch.manual_seed(1)
    layer = tdecomp.factorize(dense, family, 0.3)
    assert all(f.dtype == dtype for f in layer.factors()) and layer.weight.dtype == dtype
    assert_rel_close(layer.reconstruct().float(), reference.reconstruct(), tol, "SI in float32, cast back")
    x = torch.randn(shape, dtype=dtype)
    layer(x).float().square().sum().backward()
    assert all(f.grad is not None and f.grad.dtype == dtype for f in layer.factors())

    oracle = _float32(layer)
    fd = tdecomp.frobenius_decay(nn.Sequential(layer, copy.deepcopy(layer)))  # one layer and a vmapped pair
    assert fd.dtype == torch.float32
    assert_rel_close(fd, 2 * oracle.reconstruct().square().sum(), 1e-5, "FD of half factors in float32")
    for name in ("balancedness", "singular_values"):
        assert_rel_close(getattr(layer, name)(), getattr(oracle, name)(), 1e-5, name)
    assert_rel_close(layer.inner(layer.factors()), oracle.frobenius_sq(), 1e-5, "inner")

    with torch.no_grad():
        for f in layer.factors():
            f.mul_(torch.linspace(0.5, 2.0, f.numel(), dtype=dtype).reshape(f.shape))  # unbalance
    before = _float32(layer).reconstruct()
    tdecomp.rebalance(layer)
    assert_rel_close(layer.reconstruct().float(), before, tol, "rebalance keeps W")


@pytest.mark.parametrize("family", FAMILIES)
def test_shape_only_surgery_on_the_meta_device(family):
    for module in (nn.Linear(12, 10, device="meta"), nn.Conv2d(6, 8, 3, device="meta")):
        layer = tdecomp.factorize(module, family, 0.5, init="random")
        assert all(p.is_meta for p in layer.parameters()) and layer.weight.is_meta
        assert layer.weight.shape == module.weight.shape
        if "kaiming-factors" in layer.factor_inits:
            assert tdecomp.factorize(module, family, 0.5, init="kaiming-factors").reconstruct().is_meta
        with pytest.raises(ValueError, match="needs the dense weight's values.*meta.*init='random'"):
            tdecomp.factorize(module, family, 0.5)
    with torch.device("meta"):
        model = TinyResNet()
    dense = sum(p.numel() for p in model.parameters())
    tdecomp.factorize_model(model, family, 0.25, init="random", progress=False)
    report = tdecomp.summarize(model)
    assert report.ratio == pytest.approx(0.25, rel=0.02) and report.dense_model_params == dense
    assert all(p.is_meta for p in model.parameters())
