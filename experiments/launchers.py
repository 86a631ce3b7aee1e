"""Where sweep jobs run: in this process or N worker processes, on Slurm (submitit), or under torchrun.

Every launcher runs :func:`run_job`, which skips a finished run and resumes an interrupted one,
so relaunching a sweep after a crash, a preemption or a Slurm timeout only does what is missing.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tdecomp.config import TrainConfig, default_values
from tdecomp.train.runs import is_complete

from .sweep import Job

LAUNCHERS = ("local", "slurm", "torchrun")
log = logging.getLogger("tdecomp.sweep")


def cap_threads(threads: int) -> None:
    """Cap torch's intra-op threads at ``threads`` (0: leave torch's default, one per core).

    Small CPU runs gain little from more threads, and on a busy machine a process that starts one
    thread per core is slowed down many times over by the others' threads (a demo took 580 s instead of
    72 s next to one 2-thread job), so workers default to one thread each."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int ≥ 0 (0: torch's default), got {threads!r}")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def run_job(values: dict[str, Any], threads: int = 0) -> str:
    """Train one job (a ``TrainConfig`` as a dict) unless finished; returns ``skipped``/``trained``.

    ``threads`` > 0 caps torch's intra-op threads (:func:`cap_threads`). Under a multi-task Slurm job,
    submitit's environment is exported as torchrun's (RANK, WORLD_SIZE, …).
    """
    from tdecomp.train import train

    cap_threads(threads)
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        import submitit.helpers

        submitit.helpers.TorchDistributedEnvironment().export()
    config = TrainConfig.from_dict(values)
    if is_complete(config):
        return "skipped"
    config.resume = True  # continue an interrupted run; starts fresh if there is no checkpoint
    train(config)
    return "trained"


def run_local(jobs: Sequence[Job], workers: int = 1, threads: int = 1) -> dict[str, str]:
    """Run ``jobs`` here, one after another (``workers=1``) or in ``workers`` spawned processes, each
    with ``threads`` torch threads (:func:`cap_threads`; 0: torch's default).

    Returns job name → ``trained``/``skipped``/``failed: <error>``; a failing job does not stop the others.
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    cap_threads(threads)  # validates, and caps this process's threads for workers=1
    outcome: dict[str, str] = {}
    bar = tqdm(total=len(jobs), desc="sweep", unit="run")
    if workers == 1:
        for job in jobs:
            outcome[job.name] = _guarded(job, threads)
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(run_job, job.config.to_dict(), threads): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                try:
                    outcome[job.name] = future.result()
                except Exception as err:  # noqa: BLE001 — report and go on with the other jobs
                    outcome[job.name] = f"failed: {type(err).__name__}: {err}"
                bar.update()
    bar.close()
    return outcome


def _guarded(job: Job, threads: int) -> str:
    try:
        return run_job(job.config.to_dict(), threads)
    except Exception as err:  # noqa: BLE001 — report and go on with the other jobs
        return f"failed: {type(err).__name__}: {err}"


def slurm_parameters(
    name: str,
    partition: str | None = None,
    gpus: int = 1,
    time_min: int = 24 * 60,
    cpus: int = 8,
    mem_gb: int = 32,
    parallelism: int = 64,
) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` arguments for one array of sweep jobs.

    Each job gets one node with ``gpus`` GPUs and one task per GPU (DDP), ``cpus`` CPUs per task
    and ``mem_gb`` GB; at most ``parallelism`` jobs of the array run at once.
    """
    for key, value in (("gpus", gpus), ("time_min", time_min), ("cpus", cpus), ("mem_gb", mem_gb),
                       ("parallelism", parallelism)):
        if not isinstance(value, int) or value < (0 if key == "gpus" else 1):
            raise ValueError(f"{key} must be an int ≥ {0 if key == 'gpus' else 1}, got {value!r}")
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": time_min,
        "nodes": 1,
        "gpus_per_node": gpus,
        "tasks_per_node": max(gpus, 1),
        "cpus_per_task": cpus,
        "mem_gb": mem_gb,
        "slurm_array_parallelism": parallelism,
    }
    if partition:
        params["slurm_partition"] = partition
    return params


def submit_slurm(
    jobs: Sequence[Job], folder: Path, parameters: dict[str, Any], cluster: str | None = None
) -> list[Any]:
    """Submit ``jobs`` as one Slurm job array; returns the submitit jobs.

    ``cluster=None`` auto-detects Slurm (else submitit runs jobs as local processes);
    ``"debug"`` runs them in this process when their result is asked for (tests).
    """
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**parameters)
    return executor.map_array(run_job, [job.config.to_dict() for job in jobs])


def _override_items(values: dict[str, Any], prefix: str = "") -> list[str]:
    """``key=value`` items (dotted for nested dicts) that rebuild ``values`` on the command line."""
    import yaml

    items = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            items += _override_items(value, f"{prefix}{key}.")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            items.append(f"{prefix}{key}={text.removesuffix('...').strip()}")
    return items


def torchrun_command(job: Job, nproc: int) -> list[str]:
    """``torchrun --nproc_per_node=N -m tdecomp.cli train key=value …`` for one job: every key that
    differs from :class:`TrainConfig`'s defaults, plus ``resume=true`` (skip/continue semantics)."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be an int ≥ 1, got {nproc!r}")
    defaults = default_values()
    values = {k: v for k, v in job.config.to_dict().items() if v != defaults[k] and k != "resume"}
    return ["torchrun", f"--nproc_per_node={nproc}", "-m", "tdecomp.cli", "train",
            *_override_items(values), "resume=true"]


def run_torchrun(jobs: Sequence[Job], nproc: int) -> dict[str, str]:
    """Run each unfinished job as a torchrun command, one after another (all GPUs per job)."""
    outcome = {}
    for job in jobs:
        if is_complete(job.config):
            outcome[job.name] = "skipped"
            continue
        command = torchrun_command(job, nproc)
        log.info("$ %s", shlex.join(command))
        code = subprocess.run(command, check=False).returncode
        outcome[job.name] = "trained" if code == 0 else f"failed: torchrun exit status {code}"
    return outcome
