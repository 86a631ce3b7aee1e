"""``tdecomp compare RUN_DIR …``: paper-style tables and accuracy-vs-parameters (or -FLOPs) figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..results import FIGURE_AXES

# no "%" here: argparse %-formats help strings
HELP = ("tables (Markdown/CSV/LaTeX: mean, std, Student-t CI and n over seeds; paired differences) and "
        "accuracy-vs-params (or FLOPs) figures across runs")
OUT_ROOT = Path("comparisons")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders or folders containing them")
    parser.add_argument("--out", default=None,
                        help=f"where to write tables/figures (default: {OUT_ROOT}/<names of the RUN_DIRs>)")
    parser.add_argument(
        "--by",
        default="model,family,method,rank",
        help="config keys that define a row (default: model,family,method,rank); runs of a row may differ "
        "only in the seed",
    )
    parser.add_argument("--metric", default="acc",
                        help="headline metric from summary.json: acc (%%), bleu, ppl or loss (default: acc)")
    parser.add_argument("--x", default="params", choices=tuple(FIGURE_AXES),
                        help="figure x axis: deployed parameters, parameters while training (overcomplete "
                        "layers at their factor count) or forward FLOPs per example (default: params)")
    parser.add_argument("--pivot", default=None,
                        help="also print/write a paper-layout table with one column per value of this key (e.g. rank)")
    parser.add_argument("--paired-vs", default=None, metavar="METHOD",
                        help="add each row's per-seed paired difference to the row of METHOD (e.g. random+WD or "
                        "dense) with the same other keys, with its 95%% CI")


def default_out(runs: list[str]) -> Path:
    """``comparisons/<name1+name2…>``: a folder of its own, never inside a run folder."""
    names = "+".join(Path(r).resolve().name for r in runs)
    return OUT_ROOT / (names[:100] or "runs")


def run(args: argparse.Namespace) -> int:
    from tdecomp.analysis.compare import plot_accuracy_vs_params

    from ..results import aggregate, load_runs, to_markdown, to_pivot_markdown, write_tables

    keys = tuple(k for k in args.by.split(",") if k)
    rows = aggregate(load_runs(args.runs), keys=keys, metric=args.metric, paired_vs=args.paired_vs)
    out = Path(args.out) if args.out else default_out(args.runs)
    paths = write_tables(rows, keys, out, stem="comparison")
    figures = plot_accuracy_vs_params(rows, out / f"comparison_accuracy_vs_{args.x}", x=args.x)
    print(to_markdown(rows, keys))
    if args.pivot:
        pivot = to_pivot_markdown(rows, keys, args.pivot)
        (out / "comparison_pivot.md").write_text(pivot)
        print(pivot)
    print("wrote " + ", ".join(str(p) for p in [*paths.values(), *figures]))
    return 0
