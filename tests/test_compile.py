"""torch.compile of the whole objective (forward, loss, batched FD) equals eager, every family; a
factorized model compiles over several input lengths into as many graphs as the dense one."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import tdecomp
from tests.helpers import FAMILIES, TinyResNet


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_objective_and_gradients_equal_eager(family):
    torch.manual_seed(0)
    model = tdecomp.factorize_model(TinyResNet(), family, 0.3, progress=False).eval()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    params = [p for p in model.parameters() if p.requires_grad]

    def objective() -> torch.Tensor:
        return F.cross_entropy(model(x), y) + 0.5 * 1e-2 * tdecomp.frobenius_decay(model)

    eager = objective()
    eager_grads = torch.autograd.grad(eager, params)
    torch._dynamo.reset()
    compiled = torch.compile(objective)()
    compiled_grads = torch.autograd.grad(compiled, params)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def _graphs(model: torch.nn.Module, inputs: list[torch.Tensor]) -> tuple[int, int]:
    """(graphs Dynamo compiled, graph breaks) over a forward per input, from torch._dynamo's counters."""
    from torch._dynamo.testing import CompileCounter
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounter()  # counts the graphs handed to the backend (no code generation)
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        for x in inputs:
            compiled(x)
    return backend.frame_count, sum(counters["graph_break"].values())


def _conv1d_model() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    model = tdecomp.models.create("cnn1d", num_classes=10, width=0.25).eval()
    return model, [torch.randn(4, 1, length) for length in (40, 48, 56, 64, 72)]


def _transformer() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    model = tdecomp.models.create("bert_small", vocab_size=50, d_model=32, heads=2, ffn_dim=64, layers=1).eval()
    return model, [torch.randint(4, 50, (2, length)) for length in (8, 12, 16, 20, 24)]


@functools.cache
def _dense_graphs(build: Callable[[], tuple[torch.nn.Module, list[torch.Tensor]]]) -> tuple[int, int]:
    return _graphs(*build())


@pytest.mark.filterwarnings("ignore:factorize_model reached")  # the budget is not what this tests
@pytest.mark.parametrize("build", [_conv1d_model, _transformer], ids=["cnn1d", "transformer"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_factorized_model_compiles_over_input_lengths_like_the_dense_one(build, family):
    """One implementation per layer, no graph break: at most the dense model's graphs + 1 over five
    input lengths (every auto layer decides on the first call, inside the trace)."""
    dense_graphs, dense_breaks = _dense_graphs(build)
    torch.manual_seed(0)
    model, inputs = build()
    tdecomp.factorize_model(model, family, 0.5, init="random", progress=False)
    graphs, breaks = _graphs(model, inputs)
    assert breaks == dense_breaks and graphs <= dense_graphs + 1, (graphs, dense_graphs)
    assert None not in tdecomp.layers.execution.chosen_implementations(model).values()
