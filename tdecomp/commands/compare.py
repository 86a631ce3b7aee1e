"""``tdecomp compare SOURCE …``: paper-style tables, contrasts and figures from run folders or records files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..records import RECORDS_SUFFIX
from ..report import TABLES
from ..results import FIGURE_AXES
from ..stats import ADJUSTMENTS

# no "%" here: argparse %-formats help strings
HELP = ("tables (Markdown/CSV/LaTeX: mean, std, Student-t CI and n over seeds; contrasts with adjusted p-values), "
        "accuracy-vs-params (or FLOPs) and learning-curve figures across runs or records files")
OUT_ROOT = Path("comparisons")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="SOURCE",
                        help="run folders, folders containing them, or records files (*.jsonl, tdecomp records)")
    parser.add_argument("--out", default=None,
                        help=f"where to write tables/figures (default: {OUT_ROOT}/<names of the SOURCEs>)")
    parser.add_argument(
        "--by",
        default="model,family,method,rank",
        help="config keys that define a row (default: model,family,method,rank); runs of a row may differ "
        "only in the seed",
    )
    parser.add_argument("--metric", default="acc",
                        help="headline metric from summary.json: acc (%%), bleu, ppl or loss (default: acc), on "
                        "the test split; val_acc, val_loss, … read the validation split (for tuning)")
    parser.add_argument("--x", default="params", choices=tuple(FIGURE_AXES),
                        help="figure x axis: deployed parameters, parameters while training (overcomplete "
                        "layers at their factor count) or forward FLOPs per example (default: params)")
    parser.add_argument("--pivot", default=None,
                        help="also print/write a paper-layout table with one column per value of this key (e.g. rank)")
    parser.add_argument("--paired-vs", default=None, metavar="METHOD",
                        help="add each row's per-seed paired difference to the row of METHOD (e.g. kaiming+WD or "
                        "dense) with the same other keys, with its 95%% CI, p and adjusted p (the contrasts "
                        "M - METHOD for every method M)")
    parser.add_argument("--contrast", action="append", default=[], metavar="EXPR",
                        help='a contrast between methods, e.g. "SI+FD - kaiming+WD" or "(SI+FD - SI+WD) - '
                        '(kaiming+FD - kaiming+WD)", evaluated per seed in every group of the other row keys; '
                        "repeatable: all contrasts of one call form the family the p-values are adjusted over")
    parser.add_argument("--contrast-over", default="method", metavar="KEY",
                        help='the row key whose values the contrasts combine (default: method); e.g. family, for a '
                        'contrast between two families written as their names, evaluated per seed within each '
                        'group of the other row keys')
    parser.add_argument("--best-over", default="", metavar="KEYS",
                        help="row keys whose combinations compete (e.g. family,init,allocation): the 'best' table "
                        "names, per group of the other row keys, the cell with the highest mean and whether it "
                        "beats every other cell (paired per seed, adjusted p < 0.05)")
    parser.add_argument("--adjust", default="holm", choices=ADJUSTMENTS,
                        help="multiplicity adjustment of the contrasts' p-values: holm (family-wise error, "
                        "default), bh (Benjamini-Hochberg false discovery rate) or none")
    parser.add_argument("--curves", nargs="?", const="family", default=None, metavar="KEY",
                        help="also draw learning curves (train loss, val or test accuracy per epoch; mean and "
                        "95%% band over seeds), a panel per value of the row key KEY (default: family)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only the runs whose config has this value (repeatable, e.g. --where rank=0.05; a YAML "
                        "list is any of its values, e.g. --where \"method=[kaiming+WD, SI+FD]\"); dense runs "
                        "match any condition on rank/init/reg/rebalance")
    parser.add_argument("--tables", default=None, metavar="LIST",
                        help=f"which tables to print, a comma list of {', '.join(TABLES)} (default: every table "
                        "asked for)")
    parser.add_argument("--figure", default=None, metavar="PATH",
                        help="also write this comparison's figure (the learning curves with --curves, else "
                        "accuracy vs --x) to exactly PATH, its format from the suffix")


def default_out(sources: list[str]) -> Path:
    """``comparisons/<name1+name2…>``: a folder of its own, never inside a run folder (a records file
    counts by its name without ``.jsonl``)."""
    names = "+".join(Path(s).resolve().name.removesuffix(RECORDS_SUFFIX) for s in sources)
    return OUT_ROOT / (names[:100] or "runs")


def report_of(args: argparse.Namespace, out: Path | None):
    """:func:`tdecomp.report.report` of parsed ``compare`` arguments (also what ``docs-tables`` runs)."""
    from ..report import report

    return report(args.runs, [k for k in args.by.split(",") if k], out, stem="comparison", metric=args.metric,
                  pivot=args.pivot, paired_vs=args.paired_vs, contrasts=args.contrast, adjustment=args.adjust,
                  x=args.x, curves=args.curves, tables=args.tables.split(",") if args.tables else None,
                  figure=Path(args.figure) if args.figure else None, where=args.where,
                  contrast_over=args.contrast_over, best_over=[k for k in args.best_over.split(",") if k])


def run(args: argparse.Namespace) -> int:
    result = report_of(args, Path(args.out) if args.out else default_out(args.runs))
    print(result.text)
    print("wrote " + ", ".join(map(str, result.paths.values())))
    return 0
