"""``tdecomp compare RUN_DIR …``: paper-style tables and accuracy-vs-parameters (or -FLOPs) figures."""

from __future__ import annotations

import argparse

HELP = "tables (Markdown/CSV/LaTeX, mean ± std over seeds) and accuracy-vs-params (or FLOPs) figures across runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders or folders containing them")
    parser.add_argument("--out", default=None, help="where to write tables/figures (default: first RUN_DIR)")
    parser.add_argument(
        "--by",
        default="model,family,method,rank",
        help="config keys that define a row (default: model,family,method,rank)",
    )
    parser.add_argument("--metric", default="acc",
                        help="headline metric from summary.json: acc (%%), bleu, ppl or loss (default: acc)")
    parser.add_argument("--x", default="params", choices=("params", "flops"),
                        help="figure x axis: parameters or forward FLOPs per example (default: params)")
    parser.add_argument("--pivot", default=None,
                        help="also print/write a paper-layout table with one column per value of this key (e.g. rank)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tdecomp.analysis.compare import plot_accuracy_vs_params

    from ..results import aggregate, load_runs, to_markdown, to_pivot_markdown, write_tables

    keys = tuple(k for k in args.by.split(",") if k)
    rows = aggregate(load_runs(args.runs), keys=keys, metric=args.metric)
    out = Path(args.out or args.runs[0])
    paths = write_tables(rows, keys, out, stem="comparison")
    figures = plot_accuracy_vs_params(rows, out / f"comparison_accuracy_vs_{args.x}", x=args.x)
    print(to_markdown(rows, keys))
    if args.pivot:
        pivot = to_pivot_markdown(rows, keys, args.pivot)
        (out / "comparison_pivot.md").write_text(pivot)
        print(pivot)
    print("wrote " + ", ".join(str(p) for p in [*paths.values(), *figures]))
    return 0
