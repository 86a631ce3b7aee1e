"""``tdecomp demo``: the main job — every family at one budget, SI+FD vs random+WD, on digits.

Trains the dense CNN and each family (lowrank, cp, tucker, tt) with {spectral init + Frobenius
decay, random init + weight decay on factors} over a few seeds, then writes
``results.md``/``.csv``/``.tex`` and ``accuracy_vs_params.png``/``.pdf`` into ``--out``.
Finished runs are skipped, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse

HELP = "train dense and every family (SI+FD vs random+WD) on digits and compare them (CPU, minutes)"

DEMO_METHODS = ("SI+FD", "random+WD")  # the paper's proposal against the common default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default: 3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the config's)")
    parser.add_argument("--rank", type=float, default=None, help="parameter ratio (default: the config's)")
    parser.add_argument("--config", default=None, help="base YAML (default: experiments/configs/digits.yaml)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: 1, fast on a shared CPU; 0: torch's default, one per core)")


def run(args: argparse.Namespace) -> int:
    import logging
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from tdecomp.analysis.compare import plot_accuracy_vs_params
    from tdecomp.experiments.launchers import cap_threads
    from tdecomp.experiments.sweep import METHODS

    from ..config import load_config
    from ..layers import available_families
    from ..results import aggregate, load_runs, to_markdown, write_tables
    from ..train import train
    from ..train.runs import is_complete
    from .paths import default_config

    cap_threads(args.threads)
    logging.getLogger("tdecomp").setLevel(logging.WARNING)  # one progress bar over runs, no per-epoch lines
    out = Path(args.out)
    base = args.config or default_config("digits")
    overrides: dict = {"progress": False}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.rank is not None:
        overrides["rank"] = args.rank
    jobs = [("dense", "dense", {"family": "dense"})]
    jobs += [
        (family, method, {"family": family, **m})
        for family in available_families()
        for method, m in ((name, METHODS[name]) for name in DEMO_METHODS)
    ]
    configs = [
        load_config(
            base,
            {**overrides, **settings, "seed": seed, "out": str(out / "runs" / f"{family}-{method}-s{seed}")},
        )
        for family, method, settings in jobs
        for seed in range(args.seeds)
    ]
    tic = time.perf_counter()
    for config in tqdm(configs, desc="demo runs", unit="run"):
        if not is_complete(config):
            config.resume = True  # continue an interrupted run; starts fresh if none
            train(config)
    rows = aggregate(load_runs([out / "runs"]), keys=("family", "method"))
    paths = write_tables(rows, ("family", "method"), out)
    figures = plot_accuracy_vs_params(rows, out / "accuracy_vs_params", title=f"{configs[0].model} on digits")
    print(to_markdown(rows, ("family", "method")))
    written = ", ".join(str(p) for p in [*paths.values(), *figures])
    print(f"wall time {time.perf_counter() - tic:.0f} s; wrote {written}")
    return 0
