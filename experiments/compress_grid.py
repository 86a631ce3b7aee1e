"""Compress trained dense runs over a grid of family × allocation rule × parameter ratio.

    python -m tdecomp.experiments.compress_grid runs/src/seed* --families lowrank,cp,tucker,tt \\
        --allocations uniform,energy,stable-rank --ranks 0.1,0.05,0.02 --root runs/compress \\
        finetune_epochs=3
    tdecomp compare runs/compress --by family,allocation,rank --metric acc_before_finetune
    tdecomp compare runs/compress --by family,allocation,rank --x flops

Each job is ``tdecomp compress SOURCE family=… rank=… allocation=…`` writing to
``ROOT/<source>/<family>-<allocation>-<rank>``; finished jobs (a ``summary.json`` there) are skipped,
so an interrupted grid continues where it stopped. Seeds are the source runs' seeds (one trained
dense run per seed), which ``tdecomp compare`` averages over.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from tdecomp.cli import main as tdecomp_main
from tdecomp.layers.registry import available_families
from tdecomp.run_files import SUMMARY


def jobs(sources: list[str], families: list[str], allocations: list[str], ranks: list[str], root: Path):
    """``(out folder, tdecomp compress arguments)`` per source × family × allocation × rank."""
    for source, family, allocation, rank in itertools.product(sources, families, allocations, ranks):
        out = root / Path(source).name / f"{family}-{allocation}-{rank}"
        yield out, ["compress", source, f"family={family}", f"allocation={allocation}", f"rank={rank}", f"out={out}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="trained dense run folders (one per seed)")
    parser.add_argument("--families", default=",".join(available_families()), help="default: every registered one")
    parser.add_argument("--allocations", default="uniform,energy,stable-rank")
    parser.add_argument("--ranks", default="0.1,0.05,0.02", help="parameter ratios (floats)")
    parser.add_argument("--root", default="runs/compress", help="where the compressed runs go")
    args, overrides = parser.parse_known_args(argv)
    grid = jobs(args.sources, args.families.split(","), args.allocations.split(","), args.ranks.split(","),
                Path(args.root))
    for out, command in grid:
        if (out / SUMMARY).exists():
            continue
        status = tdecomp_main([*command, *overrides])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
