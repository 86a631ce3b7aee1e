"""``tdecomp records SOURCE … --out FILE.jsonl``: collect run records into one file small enough to commit."""

from __future__ import annotations

import argparse

HELP = "write one compact record per finished run (config, summary, learning curve) to a .jsonl file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="run folders, folders containing them, or records files to merge")
    parser.add_argument("--out", required=True, metavar="FILE.jsonl", help="the records file to write")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..records import RECORDS_SUFFIX, load_runs, write_records

    out = Path(args.out)
    if out.suffix != RECORDS_SUFFIX:
        raise ValueError(f"--out {out} must end in {RECORDS_SUFFIX} (that is how compare tells records files "
                         "from run folders)")
    runs = load_runs(args.sources)
    write_records(runs, out)
    print(f"wrote {len(runs)} records ({out.stat().st_size / 1e3:.1f} kB) to {out}")
    return 0
