"""``tdecomp sweep CONFIG [key=v1,v2 …]``: expand a grid, run what is missing, tabulate the results.

See :mod:`tdecomp.experiments.sweep` for the grid (YAML ``sweep:`` section + ``key=v1,v2`` axes, the
``method`` pseudo-axis, folder names) and :mod:`tdecomp.experiments.launchers` for where jobs run.
"""

from __future__ import annotations

import argparse

HELP = "run a grid of trainings (locally, N workers, Slurm or torchrun), skipping finished runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG | key=v1,v2,…",
        help="a YAML config (a path, or a packaged config's name such as compression_digits) followed by "
        "key=value overrides and key=v1,v2,… axes; method=dense,random+WD,SI+WD,random+FD,SI+FD",
    )
    parser.add_argument("--root", default=None, help="sweep folder (default: runs/<config name>)")
    parser.add_argument("--metric", default="acc",
                        help="headline metric of the tables: acc (%%), bleu, ppl or loss (default: acc)")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and their status, run nothing")
    parser.add_argument("--launcher", default="local", help="local (default), slurm or torchrun")
    parser.add_argument("--workers", type=int, default=1, help="local: parallel worker processes (default: 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="local: torch threads per worker (default: 1; 0: torch's default, one per core)")
    parser.add_argument("--nproc", type=int, default=1, help="torchrun: processes (GPUs) per job (default: 1)")
    slurm = parser.add_argument_group("slurm (via submitit)")
    slurm.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--gpus", type=int, default=1, help="GPUs per job, one DDP task each (default: 1)")
    slurm.add_argument("--time", type=int, default=24 * 60, help="time limit per job in minutes (default: 1440)")
    slurm.add_argument("--cpus", type=int, default=8, help="CPUs per task (default: 8)")
    slurm.add_argument("--mem", type=int, default=32, help="memory per job in GB (default: 32)")
    slurm.add_argument("--parallel", type=int, default=64, help="max array jobs running at once (default: 64)")


def run(args: argparse.Namespace) -> int:
    import logging
    import shlex
    from collections import Counter

    from tdecomp.analysis.compare import plot_accuracy_vs_params
    from tdecomp.experiments.launchers import (
        LAUNCHERS,
        run_local,
        run_torchrun,
        slurm_parameters,
        submit_slurm,
        torchrun_command,
    )
    from tdecomp.experiments.sweep import expand, job_status, load_sweep, table_keys

    from .._validation import check_choice
    from ..results import aggregate, load_runs, to_markdown, to_pivot_markdown, write_tables
    from ..run_files import SUMMARY
    from .paths import packaged_configs, resolve_config

    check_choice("launcher", args.launcher, LAUNCHERS)
    items = list(args.items)
    if not items or "=" in items[0]:
        raise ValueError("a sweep needs a config first: tdecomp sweep CONFIG [key=v1,v2 …]; packaged configs: "
                         + ", ".join(packaged_configs()))
    config = resolve_config(items.pop(0))
    sweep = load_sweep(config, items, args.root)
    jobs = expand(sweep)
    status = {job.name: job_status(job) for job in jobs}
    counts = Counter(status.values())
    print(f"{len(jobs)} jobs in {sweep.root}: {counts['done']} done, {counts['partial']} partial, {counts['new']} new")
    if args.dry_run:
        for job in jobs:
            line = f"  [{status[job.name]:>7}] {job.name}"
            if args.launcher == "torchrun":
                line += "\n    " + shlex.join(torchrun_command(job, args.nproc))
            print(line)
        return 0
    todo = [job for job in jobs if status[job.name] != "done"]
    if args.launcher == "slurm":
        params = slurm_parameters(sweep.root.name, args.partition, args.gpus, args.time, args.cpus, args.mem,
                                  args.parallel)
        submitted = submit_slurm(todo, sweep.root / "_submitit", params) if todo else []
        print(f"submitted {len(submitted)} jobs" + (f" (array {submitted[0].job_id.split('_')[0]})" if submitted
                                                     else "") + f"; logs in {sweep.root / '_submitit'}")
        return 0
    logging.getLogger("tdecomp").setLevel(logging.WARNING)  # one progress bar over runs, no per-epoch lines
    if args.launcher == "torchrun":
        outcome = run_torchrun(todo, args.nproc)
    else:
        outcome = run_local(todo, args.workers, args.threads)
    failed = {name: why for name, why in outcome.items() if why.startswith("failed")}
    for name, why in failed.items():
        print(f"  {name}: {why}")
    keys = table_keys(jobs)
    rows = aggregate(load_runs([job.out for job in jobs if (job.out / SUMMARY).exists()] or [sweep.root]),
                     keys=keys, metric=args.metric)
    paths = write_tables(rows, keys, sweep.root)
    paths["figure"] = plot_accuracy_vs_params(rows, sweep.root / "accuracy_vs_params", title=sweep.root.name)[0]
    print(to_markdown(rows, keys))
    if "rank" in keys:  # the paper's layout: one column per parameter ratio
        paths["pivot"] = sweep.root / "results_by_rank.md"
        paths["pivot"].write_text(to_pivot_markdown(rows, keys, "rank"))
        print(paths["pivot"].read_text())
    print(f"{len(outcome) - len(failed)} runs trained, {len(jobs) - len(todo)} reused, {len(failed)} failed; "
          f"wrote {', '.join(map(str, paths.values()))}")
    return 1 if failed else 0
