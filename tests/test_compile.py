"""torch.compile of the whole objective (forward, loss, batched FD) equals eager, every family."""

from __future__ import annotations

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
