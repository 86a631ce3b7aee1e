"""Which implementation an ``implementation="auto"`` layer runs: measured where timing is cheap and
decisive (CUDA, as ``torch.backends.cudnn.benchmark``), the shape cost model elsewhere.

On a layer's first forward (:meth:`~tdecomp.layers.execution.Execution.choose`) the factorized
and the reconstructed paths are both timed — forward and, when autograd records, backward — and
the layer keeps the faster one as its ``chosen_implementation`` (the only cache). Timing happens
only in eager mode; a forward traced by ``torch.compile`` falls back to the cost model, so run one
eager step before compiling to compile the measured choice (the trainer does). Tests inject a
:data:`TIMER` and :data:`MEASURED_DEVICES` to drive the measured path on the CPU.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import Tensor, nn

Timer = Callable[[Callable[[], object]], float]


def cuda_time(run: Callable[[], object], repeats: int = 5) -> float:
    """Median seconds of ``run()`` on the current CUDA stream, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


TIMER: Timer = cuda_time
MEASURED_DEVICES: frozenset[str] = frozenset({"cuda"})


def measure(run: Callable[[Tensor, str], Tensor], x: Tensor, params: list[nn.Parameter]) -> str:
    """The faster of ``run(x, "factorized")`` and ``run(x, "reconstructed")`` by :data:`TIMER` (ties:
    factorized). With autograd on, each run includes the backward to ``params`` (grads are
    returned, not accumulated, so training state is untouched)."""
    x = x.detach()
    backward = torch.is_grad_enabled() and bool(params)

    def step(impl: str) -> Callable[[], object]:
        def go() -> object:
            out = run(x, impl)
            if backward:
                return torch.autograd.grad(out, params, torch.ones_like(out), allow_unused=True)
            return out

        return go

    times = {impl: TIMER(step(impl)) for impl in ("factorized", "reconstructed")}
    return "reconstructed" if times["reconstructed"] < times["factorized"] else "factorized"
