"""Compress trained dense runs over a grid of family × init × allocation rule × parameter ratio × distillation.

    python -m tdecomp.experiments.compress_grid runs/src/seed* --families lowrank,cp,tucker,tt \\
        --inits spectral,whitened --allocations uniform,energy,whitened-energy,fisher \\
        --ranks 0.1,0.05,0.02 --distill 0,4 --root runs/compress finetune_epochs=1
    tdecomp compare runs/compress --by family,init,allocation,rank,distill --metric acc_before_finetune
    tdecomp compare runs/compress --by family,init,allocation,rank,distill --x flops

Each job is ``tdecomp compress SOURCE family=… init=… allocation=… rank=… distill=…`` (plus the
overrides given after the options, e.g. ``finetune_epochs=1 calibration_batches=8``) writing to
``ROOT/<source>/<family>-<allocation>-<rank>[-<init>][-distill<T>]`` (:func:`tdecomp.compress.run_label`;
plain SI without distillation keeps the older ``<family>-<allocation>-<rank>``); finished jobs (a
``summary.json`` there) are skipped, so an interrupted grid continues where it stopped. Seeds are the
source runs' seeds (one trained dense run per seed), which ``tdecomp compare`` averages over. The
run folders are ordinary run folders (``tdecomp compare``, ``tdecomp records``).

At the end the grid prints one row per job of the grid that has finished: accuracy before and after
fine-tuning and the mean relative output error ‖(W − Ŵ)X‖/‖WX‖ of its layers on the held-out
calibration batches (the mean weight error ‖W − Ŵ‖/‖W‖ beside it); ``--layers`` adds those two errors
per layer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from tdecomp.cli import main as tdecomp_main
from tdecomp.compress import run_label
from tdecomp.layers.registry import available_families
from tdecomp.run_files import SUMMARY


def jobs(sources: list[str], families: list[str], allocations: list[str], ranks: list[str], root: Path,
         inits: tuple[str, ...] = ("spectral",), distills: tuple[str, ...] = ("0",)):
    """``(out folder, tdecomp compress arguments)`` per source × family × init × allocation × rank × distill."""
    for source, family, init, allocation, rank, distill in itertools.product(
            sources, families, inits, allocations, ranks, distills):
        out = root / Path(source).name / run_label(family, allocation, rank, init, float(distill))
        yield out, ["compress", source, f"family={family}", f"init={init}", f"allocation={allocation}",
                    f"rank={rank}", f"distill={distill}", f"out={out}"]


def report(outs: list[Path], layers: bool = False) -> str:
    """A plain-text table of the finished runs among ``outs``: accuracies before/after fine-tuning (%),
    mean output and weight errors of the factorized layers; with ``layers`` one row per layer too."""
    rows = [f"{'run':<58} {'before':>7} {'after':>7} {'out err':>8} {'w err':>7}"]
    for out in outs:
        if not (out / SUMMARY).exists():
            continue
        summary = json.loads((out / SUMMARY).read_text())
        table = summary["layers"]
        output = [r["output_error"] for r in table if r.get("output_error") is not None]
        weight = [r["reconstruction_error"] for r in table]
        mean_output = f"{sum(output) / len(output):8.4f}" if output else f"{'—':>8}"
        rows.append(f"{f'{out.parent.name}/{out.name}':<58} {100 * summary['test_acc_before_finetune']:7.2f} "
                    f"{100 * summary['test_acc']:7.2f} {mean_output} {sum(weight) / len(weight):7.4f}")
        if layers:
            rows += [f"    {r['name']:<30} rank {str(tuple(r['rank'])):<18} output error "
                     f"{r.get('output_error') or float('nan'):.4f}  weight error {r['reconstruction_error']:.4f}"
                     for r in table]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="trained dense run folders (one per seed)")
    parser.add_argument("--families", default=",".join(available_families()), help="default: every registered one")
    parser.add_argument("--inits", default="spectral", help="spectral (plain SI) and/or whitened")
    parser.add_argument("--allocations", default="uniform,energy,stable-rank")
    parser.add_argument("--ranks", default="0.1,0.05,0.02", help="parameter ratios (floats)")
    parser.add_argument("--distill", default="0", help="distillation temperatures (0: fine-tune without)")
    parser.add_argument("--root", default="runs/compress", help="where the compressed runs go")
    parser.add_argument("--layers", action="store_true", help="print each layer's output and weight errors")
    args, overrides = parser.parse_known_args(argv)
    grid = list(jobs(args.sources, args.families.split(","), args.allocations.split(","), args.ranks.split(","),
                     Path(args.root), tuple(args.inits.split(",")), tuple(args.distill.split(","))))
    for out, command in grid:
        if (out / SUMMARY).exists():
            continue
        status = tdecomp_main([*command, *overrides])
        if status:
            return status
    print(report([out for out, _ in grid], layers=args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
