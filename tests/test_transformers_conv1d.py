"""transformers' Conv1D (GPT-2: weight (nx, nf), y = x W + b) factorizes as the Linear nx → nf it is and
collapses back to a Conv1D; it is recognised without importing transformers (issue 21 item 2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES, assert_rel_close
from tests.zoo import build, logits, require


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D rewritten, claiming its module: what duck typing must recognise."""

    __module__ = "transformers.pytorch_utils"

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, self.nx), self.weight).reshape(*x.shape[:-1], self.nf)


def _as_linear(conv: nn.Module) -> nn.Linear:
    """The oracle: the nn.Linear computing the same map (weight transposed)."""
    linear = nn.Linear(conv.nx, conv.nf, dtype=conv.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    return linear


@pytest.mark.parametrize("family", FAMILIES)
def test_conv1d_factorizes_as_the_linear_with_the_transposed_weight_and_collapses_to_conv1d(family):
    conv = Conv1D(10, 12).double()
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    torch.manual_seed(1)
    layer = tdecomp.factorize(conv, family, 0.5)
    torch.manual_seed(1)
    oracle = tdecomp.factorize(_as_linear(conv), family, 0.5)
    assert layer.rank == oracle.rank
    assert_rel_close(layer.reconstruct(), oracle.reconstruct(), 1e-12, "SI of the transposed weight")
    assert_rel_close(layer(x), oracle(x), 1e-12, "factorized forward")
    assert (layer.nf, layer.nx, layer.weight.shape) == (10, 12, (12, 10))  # Conv1D's attributes and weight shape
    with pytest.raises(AttributeError):
        layer.in_features  # noqa: B018  (Conv1D has none)
    dense = layer.to_dense()
    assert type(dense) is Conv1D and dense.weight.shape == (12, 10)
    assert_rel_close(dense(x), layer(x), 1e-12, "collapsed Conv1D")
    full = tdecomp.factorize(conv, family, 10 if family != "tucker" else (10, 10))
    if family in ("lowrank", "tucker", "tt"):  # exact at full rank: the dense Conv1D's own function
        assert_rel_close(full(x), conv(x), 1e-10, "full-rank factorization")


def test_conv1d_is_recognised_without_importing_transformers():
    script = textwrap.dedent("""
        import sys, torch, tdecomp
        from torch import nn
        class Conv1D(nn.Module):
            __module__ = "transformers.pytorch_utils"
            def __init__(self, nf, nx):
                super().__init__()
                self.nf, self.nx = nf, nx
                self.weight = nn.Parameter(torch.randn(nx, nf))
                self.bias = nn.Parameter(torch.zeros(nf))
        model = nn.Sequential(Conv1D(8, 6), nn.ReLU(), Conv1D(6, 8), nn.Linear(6, 2))
        tdecomp.factorize_model(model, "lowrank", 0.5, progress=False)
        assert isinstance(model[0], tdecomp.FactorizedLayer) and isinstance(model[2], tdecomp.FactorizedLayer)
        tdecomp.collapse_model(model)
        assert type(model[0]).__name__ == "Conv1D"
        assert "transformers" not in sys.modules, "recognising Conv1D imported transformers"
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gpt2_factorizes_its_conv1d_layers_and_collapses_to_the_same_function():
    transformers = require("transformers")
    model, inputs = build("gpt2")
    conv1d = [n for n, m in model.named_modules() if isinstance(m, transformers.pytorch_utils.Conv1D)]
    assert len(conv1d) == 8  # c_attn, attn.c_proj, c_fc, mlp.c_proj in each of the 2 blocks
    tdecomp.factorize_model(model, "lowrank", 0.3, progress=False)
    assert all(isinstance(model.get_submodule(n), tdecomp.FactorizedLayer) for n in conv1d)
    with torch.no_grad():
        before = logits(model, inputs)
    tdecomp.collapse_model(model)
    assert all(type(model.get_submodule(n)) is transformers.pytorch_utils.Conv1D for n in conv1d)
    with torch.no_grad():
        assert_rel_close(logits(model, inputs), before, 1e-5, "collapsed GPT-2")
