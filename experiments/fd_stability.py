"""Frobenius-decay stability on the issue-15 setup: NaN counts and balancedness, with and without
:func:`tdecomp.rebalance` after each optimizer step.

Setup (GitHub issue 15): MNIST-1D signals as 1×40 images; a CNN of Conv2d (1, 5) layers
(1→c₀→c₁→c₂→c₃ channels, BN + ReLU, global average pool, Linear), the inner three convs
factorized; SGD momentum 0.9, lr 0.05, batch 128, λ = 5·10⁻⁴ as FD coefficient, FD added to the
loss as the trainer does (loss + λ/2·Σ‖W‖²_F). A run stops at its first non-finite loss.

    python -m tdecomp.experiments.fd_stability --families tucker --inits random --seeds 3 --steps 320
    python -m tdecomp.experiments.fd_stability --rebalance off --family-option fixed_spatial=false ...  # before the fix

Prints one line per run and a table (NaN count per family × init); ``--out FILE.json`` keeps
the per-run records (including the balancedness trajectory every ``--track`` steps) for
``--plot``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tdecomp
from tdecomp import yaml_values
from tdecomp.regularize import _outermost_factorized

LR, MOMENTUM, LAMBDA, BATCH = 0.05, 0.9, 5e-4, 128


def conv1x5_net(widths: Sequence[int], classes: int = 10) -> nn.Sequential:
    """Conv2d (1, 5) layers 1→widths[0]→…→widths[-1], each with BN + ReLU, then pool + Linear."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip((1, *widths), widths):
        layers += [nn.Conv2d(c_in, c_out, (1, 5), padding=(0, 2)), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes))


def mnist1d(num_samples: int = 5000) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST-1D (Greydanus 2020) with its default arguments, as (N, 1, 1, 40) images."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    d = make_dataset(args)
    x, xt = (torch.tensor(d[k], dtype=torch.float32)[:, None, None, :] for k in ("x", "x_test"))
    return x, torch.tensor(d["y"]), xt, torch.tensor(d["y_test"])


def factor_stats(model: nn.Module) -> tuple[float, float]:
    """(max factor norm, max per-layer balancedness) over the factorized layers."""
    layers = _outermost_factorized(model)
    norms = [float(p.norm()) for m in layers for p in m.factor_parameters()]
    balance = [float(m.balancedness()) for m in layers]
    return max(norms), max(balance)


def train_run(
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    family: str,
    init: str,
    seed: int,
    *,
    steps: int,
    widths: Sequence[int] = (64, 128, 128, 128),
    ratio: float = 0.1,
    rebalance: bool = True,
    family_options: dict[str, Any] | None = None,
    track: int = 0,
) -> dict:
    """Train one model; returns ``nan_step`` (first non-finite loss, or None), test accuracy and
    the tracked ``(step, max factor norm, max balancedness)`` trajectory. ``family_options`` are
    given to the families that declare them (their option schema), the others ignore them."""
    x, y, xt, yt = data
    torch.manual_seed(seed)
    model = conv1x5_net(widths)
    declared = {o.name for o in tdecomp.get_family(family).options}
    options = {k: v for k, v in (family_options or {}).items() if k in declared}
    tdecomp.factorize_model(model, family, ratio, init=init, progress=False, **options)
    optimizer = torch.optim.SGD(tdecomp.param_groups(model, LAMBDA, LAMBDA), lr=LR, momentum=MOMENTUM)
    order = torch.randperm(len(x))
    trajectory, nan_step, position = [], None, 0
    for step in range(steps):
        if track and step % track == 0:
            trajectory.append((step, *factor_stats(model)))
        if position + BATCH > len(x):
            order, position = torch.randperm(len(x)), 0
        index = order[position : position + BATCH]
        position += BATCH
        loss = F.cross_entropy(model(x[index]), y[index]) + 0.5 * LAMBDA * tdecomp.frobenius_decay(model)
        if not math.isfinite(float(loss)):
            nan_step = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rebalance:
            tdecomp.rebalance(model, optimizer)
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean()) if nan_step is None else float("nan")
    return {"family": family, "init": init, "seed": seed, "rebalance": rebalance,
            "family_options": options, "nan_step": nan_step,
            "test_acc": acc, "trajectory": trajectory}


def parse_family_options(items: Sequence[str]) -> dict[str, Any]:
    """``["fixed_spatial=false"]`` → ``{"fixed_spatial": False}``; each name must be some family's option."""
    declared = {o.name for f in tdecomp.available_families() for o in tdecomp.get_family(f).options}
    options = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in declared:
            raise SystemExit(f"--family-option {item!r}: expected NAME=VALUE with NAME one of {sorted(declared)}")
        options[name] = yaml_values.load(raw)
    return options


def plot(records: list[dict], out: str) -> None:
    """Max balancedness and max factor norm over training, one line per run (off dashed, on solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {}
    for r in records:
        steps, norms, balance = zip(*r["trajectory"])
        key = f"{r['family']} {r['init']}"
        color = colors.setdefault(key, f"C{len(colors)}")
        style = "-" if r["rebalance"] else "--"
        label = f"{key}, {'rebalanced' if r['rebalance'] else 'plain FD'}" if r["seed"] == 0 else None
        axes[0].semilogy(steps, balance, style, color=color, label=label, lw=1)
        axes[1].semilogy(steps, norms, style, color=color, lw=1)
        if r["nan_step"] is not None:
            axes[0].plot(steps[-1], balance[-1], "x", color=color)
    axes[0].set(xlabel="step", ylabel="max layer balancedness", title="balancedness (× = NaN next)")
    axes[1].set(xlabel="step", ylabel="max factor norm ‖F_k‖", title="largest factor norm")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(tdecomp.available_families()))
    parser.add_argument("--inits", nargs="+", default=["random", "spectral"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 128, 128])
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--rebalance", choices=["on", "off"], default="on")
    parser.add_argument("--family-option", action="append", default=[], metavar="NAME=VALUE",
                        help="a family option (YAML value), given to the families that declare it, e.g. "
                             "fixed_spatial=false: Tucker's kernel ranks scaled like the channels (before the fix)")
    parser.add_argument("--track", type=int, default=0, help="record factor norms every N steps (0: off)")
    parser.add_argument("--out", default="", help="append the run records to this JSON-lines file")
    parser.add_argument("--plot", default="", help="draw the trajectories in --out to this image and exit")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    family_options = parse_family_options(args.family_option)
    if args.plot:
        with open(args.out) as f:
            records = [json.loads(line) for line in f if line.strip()]
        plot([r for r in records if r["family"] in args.families and r["init"] in args.inits], args.plot)
        return
    torch.set_num_threads(args.threads)
    data = mnist1d()
    table: dict[tuple[str, str], list] = {}
    for family in args.families:
        for init in args.inits:
            for seed in range(args.seeds):
                tic = time.perf_counter()
                r = train_run(data, family, init, seed, steps=args.steps, widths=args.widths, ratio=args.ratio,
                              rebalance=args.rebalance == "on", family_options=family_options,
                              track=args.track)
                table.setdefault((family, init), []).append(r)
                print(f"{family:8s} {init:8s} seed {seed} rebalance={args.rebalance}: nan_step={r['nan_step']} "
                      f"test_acc={r['test_acc']:.4f} ({time.perf_counter() - tic:.0f}s)", flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(f"\nrebalance={args.rebalance}, family options {family_options}, {args.steps} steps, "
          f"widths {args.widths}, ratio {args.ratio}")
    print("| family | init | NaN runs | mean test acc (finite runs) |\n|---|---|---|---|")
    for (family, init), runs in table.items():
        finite = [r["test_acc"] for r in runs if r["nan_step"] is None]
        acc = f"{100 * sum(finite) / len(finite):.1f}%" if finite else "–"
        print(f"| {family} | {init} | {sum(r['nan_step'] is not None for r in runs)}/{len(runs)} | {acc} |")


if __name__ == "__main__":
    main()
