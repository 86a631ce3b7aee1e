"""Step-time overhead of :class:`tdecomp.analysis.dynamics.DynamicsTracker` on digits training loops.

Trains the small CNN and ResNet-20 (low-rank at 10% of the parameters, SI, FD, SGD momentum 0.9)
on 8×8 digits batches in a plain PyTorch loop, with and without a tracker recording every
``--every`` steps, alternating the two ``--repeats`` times so that machine load affects both
alike; prints the median time per optimizer step and the overhead in percent, and — less
sensitive to load — the time one record takes relative to the ``every`` steps it covers. Not a
test: the numbers depend on the machine (run it on an idle one, and say which).

    python benchmarks/tracker_overhead.py --steps 200 --every 50 --repeats 3 [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import tdecomp
from tdecomp import data, models
from tdecomp.analysis.dynamics import DynamicsTracker


def _setup(model_name: str, device: torch.device) -> tuple[data.DataBundle, nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    bundle = data.create("digits", root="data", download=False, seed=0, subset=0)
    model = models.create(model_name, **bundle.model_kwargs)
    tdecomp.factorize_model(model, "lowrank", 0.1, progress=False)
    model.to(device)
    return bundle, model, torch.optim.SGD(tdecomp.param_groups(model, 5e-4, 5e-4), lr=0.05, momentum=0.9)


def record_time(model_name: str, device: torch.device, records: int = 10) -> float:
    """Seconds one record costs (``before_step`` + ``step`` at a record step, flush included)."""
    _, model, opt = _setup(model_name, device)
    with DynamicsTracker(model, opt, every=1, flush_every=records) as tracker:
        tracker.before_step()  # the step-0 record, outside the timing
        tic = time.perf_counter()
        for _ in range(records):
            tracker.before_step()
            tracker.step()
        tracker.flush()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - tic) / records


def step_time(model_name: str, device: torch.device, steps: int, every: int | None, batch_size: int) -> float:
    """Seconds per optimizer step over ``steps`` steps (after 5 warm-up steps); ``every=None``: untracked."""
    bundle, model, opt = _setup(model_name, device)
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=batch_size, shuffle=True, drop_last=True)
    batches = [(x.to(device), y.to(device)) for x, y in loader]
    tracker = None if every is None else DynamicsTracker(model, opt, every=every, flush_every=10)

    def one_step(i: int) -> None:
        x, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y) + 0.5 * 5e-4 * tdecomp.frobenius_decay(model)
        loss.backward()
        if tracker:
            tracker.before_step()
        opt.step()
        if tracker:
            tracker.step()

    for i in range(5):
        one_step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for i in range(steps):
        one_step(i)
    if tracker:
        tracker.close()  # the final flush counts too
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - tic) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet20")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device}, threads={torch.get_num_threads()}, batch={args.batch_size}, steps={args.steps}, "
          f"track every {args.every}")
    print("| model | step without tracker (ms) | step with tracker (ms) | overhead (measured) "
          "| one record (ms) | record / (every × step) |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        plain, tracked = [], []
        for _ in range(args.repeats):
            plain.append(step_time(name, device, args.steps, None, args.batch_size))
            tracked.append(step_time(name, device, args.steps, args.every, args.batch_size))
        a, b = statistics.median(plain), statistics.median(tracked)
        r = record_time(name, device)
        print(f"| {name} | {1e3 * a:.2f} | {1e3 * b:.2f} | {100 * (b - a) / a:+.1f}% | {1e3 * r:.1f} "
              f"| {100 * r / (args.every * a):.1f}% |")


if __name__ == "__main__":
    main()
