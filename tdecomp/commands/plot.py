"""``tdecomp plot RUN_DIR [RUN_DIR …]``: training curves and norm / effective-step dynamics figures."""

from __future__ import annotations

import argparse

HELP = "figures (PNG + PDF) of runs: training curves, ‖W‖, η/‖W‖², angular update, nuclear norm, ranks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders (dynamics figures need track_every=N when training)")
    parser.add_argument("--out", default=None, help="where to write the figures (default: the first RUN_DIR)")
    parser.add_argument("--table", action="store_true",
                        help="also print the figures' aggregate values (first and last recorded step, and "
                        "--steps) with the final accuracies, one column per run")
    parser.add_argument("--steps", default="", metavar="S1,S2",
                        help="more steps for --table (the nearest record is shown)")


def figures_and_table(args: argparse.Namespace, formats: tuple[str, ...] = ("png", "pdf")) -> tuple[list, str]:
    """Write the figures of ``args.runs`` to ``args.out`` and return them with the ``--table`` text
    (empty without ``--table``); also what ``docs-tables`` runs for a ``plot`` block."""
    from tdecomp.analysis.dynamics_table import dynamics_table
    from tdecomp.analysis.plots import load_runs, write_figures

    runs = load_runs(args.runs)  # read once for the figures and the table
    written = write_figures(runs, args.out or args.runs[0], formats=formats)
    steps = [float(s) for s in args.steps.split(",") if s]
    return written, dynamics_table(runs, steps) if args.table else ""


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..run_files import DYNAMICS

    written, table = figures_and_table(args)
    if table:
        print(table)
    print("wrote " + ", ".join(str(p) for p in written))
    untracked = [r for r in args.runs if not (Path(r) / DYNAMICS).exists()]
    if untracked:
        print(f"no {DYNAMICS} in {', '.join(untracked)}: train with track_every=N (e.g. 50) for the "
              "norm and effective-step figures")
    return 0
