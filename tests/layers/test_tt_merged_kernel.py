"""TT's two factorized forwards (chain of per-mode convs, or one conv by the merged kernel cores)
against the dense op with the reconstructed weight, and which one the shape rule picks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import tdecomp
from tdecomp.layers import tt
from tests.helpers import DENSE_CASES, assert_rel_close, make_dense

CONV_CASES = tuple(c for c in DENSE_CASES if c.startswith("conv"))
# merging needs two or more kernel modes of size > 1
MULTI_MODE_CASES = tuple(c for c in CONV_CASES if sum(k > 1 for k in DENSE_CASES[c][0]().kernel_size) >= 2)


@pytest.mark.parametrize(
    "case,merge", [(c, True) for c in MULTI_MODE_CASES] + [(c, False) for c in CONV_CASES]
)
def test_forward_and_gradients_equal_the_dense_op_with_reconstructed_weight(case, merge, monkeypatch):
    monkeypatch.setattr(tt, "_merges_kernel_cores", lambda spec, rank: merge)
    module, x = make_dense(case)
    layer = tdecomp.factorize(module, "tt", 0.5, init="random", implementation="factorized")
    params = {"weight": layer.reconstruct()} | ({"bias": layer.bias} if module.bias is not None else {})
    expected = functional_call(module, params, (x,))
    out = layer(x)
    assert_rel_close(out, expected, 1e-10, f"{case} merge={merge} forward")
    grad = torch.randn_like(out)
    factors = layer.factors()
    got = torch.autograd.grad(out, factors, grad)
    want = torch.autograd.grad(expected, factors, grad)
    for g, w in zip(got, want):
        assert_rel_close(g, w, 1e-10, f"{case} merge={merge} factor gradient")


def _spec_and_rank(conv: nn.Module, rank) -> tuple:
    layer = tdecomp.factorize(conv, "tt", rank, init="random")
    return layer.spec, layer.rank


@pytest.mark.parametrize("channels,stride", [(32, 1), (32, 2), (64, 1), (64, 2), (128, 1)])
def test_resnet32x2_shapes_at_ten_percent_merge_the_3x3_kernel(channels, stride):
    conv = nn.Conv2d(channels, channels * stride, 3, stride, 1, bias=False)
    assert tt._merges_kernel_cores(*_spec_and_rank(conv, 0.1))


def test_a_narrow_middle_bond_keeps_the_chain_and_one_kernel_mode_never_merges():
    assert not tt._merges_kernel_cores(*_spec_and_rank(nn.Conv2d(32, 32, 3, padding=1), (16, 2, 16)))
    assert not tt._merges_kernel_cores(*_spec_and_rank(nn.Conv1d(32, 32, 3, padding=1), (8, 8)))


def test_cost_model_counts_the_merged_kernel_conv():
    """MACs per forward: 1×1 c_in→r₁, 3×3 r₁→r₃ and 1×1 r₃→c_out on the 16×16 map, plus the
    r₁·3·r₂·3·r₃ kernel product once per call."""
    conv = nn.Conv2d(32, 48, 3, padding=1, bias=False)
    layer = tdecomp.factorize(conv, "tt", (6, 15, 5), init="random", implementation="factorized")
    n, positions = 4, 16 * 16
    expected = n * positions * (32 * 6 + 6 * 9 * 5 + 5 * 48) + 6 * 3 * 15 * 3 * 5
    assert layer.macs((n, 32, 16, 16)) == expected
