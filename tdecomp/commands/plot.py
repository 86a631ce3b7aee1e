"""``tdecomp plot RUN_DIR [RUN_DIR …]``: training curves and norm / effective-step dynamics figures."""

from __future__ import annotations

import argparse

HELP = "figures (PNG + PDF) of runs: training curves, ‖W‖, η/‖W‖², angular update, nuclear norm, ranks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders (dynamics figures need track_every=N when training)")
    parser.add_argument("--out", default=None, help="where to write the figures (default: the first RUN_DIR)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tdecomp.analysis.plots import plot_runs

    from ..run_files import DYNAMICS

    written = plot_runs(args.runs, args.out or args.runs[0])
    print("wrote " + ", ".join(str(p) for p in written))
    untracked = [r for r in args.runs if not (Path(r) / DYNAMICS).exists()]
    if untracked:
        print(f"no {DYNAMICS} in {', '.join(untracked)}: train with track_every=N (e.g. 50) for the "
              "norm and effective-step figures")
    return 0
