"""``tdecomp demo``: the main job — every family at one budget, SI+FD vs random+WD, on digits.

Runs the packaged sweep ``experiments/configs/demo_digits.yaml`` (dense and every registered family ×
{spectral init + Frobenius decay, random init + weight decay on factors} × seeds) through the sweep
machinery (:func:`tdecomp.commands.sweep.execute`), so ``--out`` gets ``records.jsonl``,
``results.md``/``.csv``/``.tex``, ``accuracy_vs_params.png``/``.pdf`` and ``learning_curves.png``/``.pdf``.
Finished runs are skipped, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse

HELP = "train dense and every family (SI+FD vs random+WD) on digits and compare them (CPU, minutes)"
DEMO_CONFIG = "demo_digits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default: 3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the config's)")
    parser.add_argument("--rank", type=float, default=None, help="parameter ratio (default: the config's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: 1, fast on a shared CPU; 0: torch's default, one per core)")


def run(args: argparse.Namespace) -> int:
    import time

    from tdecomp.experiments.sweep import load_sweep

    from .paths import default_config
    from .sweep import execute

    if args.seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {args.seeds}")
    items = [f"seed={','.join(map(str, range(args.seeds)))}"]
    items += [f"{key}={value}" for key, value in (("epochs", args.epochs), ("rank", args.rank)) if value is not None]
    sweep = load_sweep(default_config(DEMO_CONFIG), items, args.out)
    tic = time.perf_counter()
    status = execute(sweep, threads=args.threads, title=f"{sweep.base['model']} on {sweep.base['data']}")
    print(f"wall time {time.perf_counter() - tic:.0f} s")
    return status
