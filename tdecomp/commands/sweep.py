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
        "key=value overrides and key=v1,v2,… axes; method=dense,kaiming+WD,SI+FD,SI+FD-norebal,… (any label "
        "results tables give runs); family=all (every registered family)",
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
    from tdecomp.experiments.launchers import LAUNCHERS
    from tdecomp.experiments.sweep import load_sweep

    from .._validation import check_choice
    from .paths import packaged_configs, resolve_config

    check_choice("launcher", args.launcher, LAUNCHERS)
    items = list(args.items)
    if not items or "=" in items[0]:
        raise ValueError("a sweep needs a config first: tdecomp sweep CONFIG [key=v1,v2 …]; packaged configs: "
                         + ", ".join(packaged_configs()))
    config = resolve_config(items.pop(0))
    sweep = load_sweep(config, items, args.root)
    slurm = None
    if args.launcher == "slurm":
        slurm = (args.partition, args.gpus, args.time, args.cpus, args.mem, args.parallel)
    return execute(sweep, args.launcher, args.workers, args.threads, args.nproc, args.metric, args.dry_run, slurm)


def execute(sweep, launcher: str = "local", workers: int = 1, threads: int = 1, nproc: int = 1, metric: str = "acc",
            dry_run: bool = False, slurm: tuple | None = None, title: str = "") -> int:
    """Run what is missing of ``sweep`` (a :class:`tdecomp.experiments.sweep.Sweep`), then write
    ``ROOT/records.jsonl`` (every finished run) and the report (:func:`tdecomp.report.report`: tables,
    pivot by rank, accuracy and learning-curve figures) in ``ROOT``; ``tdecomp demo`` runs its packaged
    sweep through here. Returns the exit status (1 if a job failed)."""
    import logging
    import shlex
    from collections import Counter

    from tdecomp.experiments.launchers import run_local, run_torchrun, slurm_parameters, submit_slurm, torchrun_command
    from tdecomp.experiments.sweep import expand, job_status, table_keys

    from ..records import load_runs, write_records
    from ..report import report
    from ..run_files import RECORDS, SUMMARY

    jobs = expand(sweep)
    status = {job.name: job_status(job) for job in jobs}
    counts = Counter(status.values())
    print(f"{len(jobs)} jobs in {sweep.root}: {counts['done']} done, {counts['partial']} partial, {counts['new']} new")
    if dry_run:
        for job in jobs:
            line = f"  [{status[job.name]:>7}] {job.name}"
            if launcher == "torchrun":
                line += "\n    " + shlex.join(torchrun_command(job, nproc))
            print(line)
        return 0
    todo = [job for job in jobs if status[job.name] != "done"]
    if launcher == "slurm":
        params = slurm_parameters(sweep.root.name, *slurm)
        submitted = submit_slurm(todo, sweep.root / "_submitit", params) if todo else []
        print(f"submitted {len(submitted)} jobs" + (f" (array {submitted[0].job_id.split('_')[0]})" if submitted
                                                     else "") + f"; logs in {sweep.root / '_submitit'}")
        return 0
    logging.getLogger("tdecomp").setLevel(logging.WARNING)  # one progress bar over runs, no per-epoch lines
    outcome = run_torchrun(todo, nproc) if launcher == "torchrun" else run_local(todo, workers, threads)
    failed = {name: why for name, why in outcome.items() if why.startswith("failed")}
    for name, why in failed.items():
        print(f"  {name}: {why}")
    finished = [job.out for job in jobs if (job.out / SUMMARY).exists()]
    if not finished:
        raise FileNotFoundError(f"no run of the sweep in {sweep.root} has finished")
    records = write_records(load_runs(finished), sweep.root / RECORDS)
    keys = table_keys(jobs)
    result = report([records], keys, sweep.root, metric=metric, pivot="rank" if "rank" in keys else None,
                    curves="family" if "family" in keys else None, title=title or sweep.root.name)
    print(result.text)
    print(f"{len(outcome) - len(failed)} runs trained, {len(jobs) - len(todo)} reused, {len(failed)} failed; "
          f"wrote {', '.join(map(str, [records, *result.paths.values()]))}")
    return 1 if failed else 0
