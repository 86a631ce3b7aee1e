"""Grid sweeps: a base config × axes → one run folder per job, named from the job's axis values.

A sweep is a YAML config whose optional ``sweep:`` section maps keys to lists of values (or is a
list of such mappings: the union of their grids, for grids that are not one product, e.g. the
official rank-scale study that runs ``overcomplete=deep`` only at scale 1), plus
command-line items ``key=v1,v2,…`` (a comma list makes ``key`` an axis; a single value is a fixed
override unless the key is already an axis of the YAML). The grid is the Cartesian product of the
axes, in the order they first appear (YAML, then command line). Dotted keys reach nested values
(``model_kwargs.width=1,2``).

``method`` is a pseudo-axis over every init × reg variant, labelled exactly as
:func:`tdecomp.methods.method_label` labels finished runs (:data:`tdecomp.methods.METHODS`): ``dense``
(family=dense), ``random+WD``, ``kaiming+WD`` (the official low-rank baseline), ``SI+WD``, ``SI+FD``,
``SI+FD-norebal`` (FD without rebalancing), the ``…+CRS`` and ``…+none`` variants, and so on. Dense jobs
ignore ``rank``/``init``/``reg``/``rebalance`` (they keep the base values), so a dense baseline appears
once per combination of the other axes, not once per rank. ``family: all`` is every registered family
(:func:`tdecomp.layers.available_families`; dense is the ``method=dense`` baseline).

Job folders are ``ROOT/<name>`` with ``<name>`` built from the axis values, e.g.
``lowrank_SI+FD_rank-0.1_seed-0`` or ``dense_seed-0``: the same job always lands in the same
folder, so finished runs are skipped and interrupted ones resumed (see :func:`job_status`). A string
value may name ``{root}`` (the sweep folder) and the job's other values, e.g. ``{seed}``: the
normalization experiment's ``norm_match: "{root}/lowrank_SI+FD_seed-{seed}/dynamics.jsonl"``.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdecomp import dotted, yaml_values
from tdecomp.config import TrainConfig, load_config
from tdecomp.layers import available_families
from tdecomp.methods import DENSE_IRRELEVANT, METHODS, method_label
from tdecomp.train.checkpoint import LAST
from tdecomp.train.runs import is_complete

SWEEP_KEY = "sweep"
ALL_FAMILIES = "all"  # ``family: all``: every registered family


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its folder name, axis values and full configuration."""

    name: str
    values: dict[str, Any]
    config: TrainConfig

    @property
    def out(self) -> Path:
        return Path(self.config.out)


@dataclass(frozen=True)
class Sweep:
    """A base config (``values``, without the ``sweep:`` section) and its grids of axes."""

    base: dict[str, Any]
    grids: tuple[dict[str, list[Any]], ...]
    root: Path

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Every axis of every grid, values in first-seen order."""
        merged: dict[str, list[Any]] = {}
        for grid in self.grids:
            for key, values in grid.items():
                merged.setdefault(key, [])
                merged[key] += [v for v in values if v not in merged[key]]
        return merged


def parse_items(items: Sequence[str]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``["epochs=3", "rank=0.1,0.05"]`` → fixed overrides ``{"epochs": 3}`` and axes
    ``{"rank": [0.1, 0.05]}``. Values are YAML scalars; ``key=[8,8,3,3],[4,4,3,3]`` is an axis of lists."""
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"sweep item {item!r} is not of the form key=value or key=v1,v2,…")
        values = yaml_values.load(f"[{raw}]") if raw else [""]
        if len(values) > 1:
            axes[key] = values
        else:
            fixed[key] = values[0]
    return fixed, axes


def _axis(key: str, values: Any) -> list[Any]:
    """An axis' values: a list as given, ``family: all`` every registered family, a scalar one value."""
    if key == "family" and values == ALL_FAMILIES:
        return list(available_families())
    return list(values) if isinstance(values, list) else [values]


def load_sweep(config: Path | str | None, items: Sequence[str] = (), root: Path | str | None = None) -> Sweep:
    """Read a sweep: the YAML (if any), its ``sweep:`` axes and the command-line ``items``.

    ``root`` defaults to ``runs/<config stem>`` (``runs/sweep`` without a config); a fixed
    ``out=`` item also sets it (each job writes below it, never to it).
    """
    base: dict[str, Any] = {}
    if config is not None:
        base = yaml_values.load(Path(config).read_text()) or {}
        if not isinstance(base, dict):
            raise ValueError(f"config file {config} must hold a mapping of keys to values")
    section = base.pop(SWEEP_KEY, None) or {}
    sections = section if isinstance(section, list) else [section]
    if not all(isinstance(s, dict) for s in sections):
        raise ValueError(f"the {SWEEP_KEY!r} section of {config} must map keys to lists of values "
                         f"(or be a list of such mappings), got {section!r}")
    grids = [{k: _axis(k, v) for k, v in s.items()} for s in sections]
    fixed, cli_axes = parse_items(items)
    if fixed.get("family") == ALL_FAMILIES:  # family=all on the command line is an axis
        cli_axes["family"] = _axis("family", fixed.pop("family"))
    for key, value in fixed.items():
        in_grid = [axes for axes in grids if key in axes]
        for axes in in_grid:  # a YAML axis narrowed on the command line stays an axis (stable names)
            axes[key] = [value]
        if not in_grid and key != "out":
            dotted.put(base, key, value)
    for axes in grids:
        axes.update(cli_axes)
        for label in axes.get("method", ()):
            if label not in METHODS:
                raise ValueError(f"method={label!r} is not valid; expected one of: {', '.join(METHODS)}")
    if root is None:
        root = fixed.get("out") or Path("runs") / (Path(config).stem if config is not None else "sweep")
    return Sweep(base, tuple(grids), Path(root))


def _slug(value: Any) -> str:
    text = "x".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", text)


def job_name(values: dict[str, Any], config: TrainConfig) -> str:
    """Folder name of a job from its axis values: family and method first (unprefixed), then
    ``key-value`` for every other axis in axis order; dense jobs drop rank/init/reg/method; the method
    label stands for init, reg and norm_match."""
    dense = config.family == "dense"
    parts = []
    if "family" in values or "method" in values:
        parts.append("dense" if dense else config.family)
    if not dense and ({"method", "init", "reg", "norm_match"} & set(values)):
        parts.append(method_label(config.to_dict()))
    # the method label says these (a norm_match path would make a long name of what "-norm-matched" says)
    skipped = {"family", "method", "init", "reg", "norm_match", *(DENSE_IRRELEVANT if dense else ())}
    parts += [f"{key}-{_slug(dotted.get(config.to_dict(), key))}" for key in values if key not in skipped]
    return "_".join(parts) or "run"


def expand(sweep: Sweep) -> list[Job]:
    """All jobs of ``sweep``, in grid order, duplicates (e.g. one dense run per rank) removed."""
    jobs: dict[str, Job] = {}
    combos = (dict(zip(axes, combo)) for axes in sweep.grids for combo in itertools.product(*axes.values()))
    for values in combos:
        merged = copy.deepcopy(sweep.base)
        for key, value in values.items():
            if key != "method":
                dotted.put(merged, key, value)
        merged.update(METHODS[values["method"]] if "method" in values else {})  # method=dense beats family
        if merged.get("family") == "dense":
            for key in DENSE_IRRELEVANT:
                merged.pop(key, None)
                if key in sweep.base:
                    merged[key] = sweep.base[key]
        merged.pop("out", None)
        config = load_config(None, _filled(merged, sweep.root))
        name = job_name(values, config)
        config.out = str(sweep.root / name)
        config.progress = False
        job = Job(name, values, config)
        previous = jobs.setdefault(name, job)
        if previous.config.to_dict() != config.to_dict():
            raise ValueError(f"two different jobs of the sweep map to folder {name!r}; add the key that "
                             "distinguishes them as an axis")
    return list(jobs.values())


def _filled(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """``values`` with every top-level string formatted by ``{root}`` (the sweep folder) and the job's
    own top-level values, e.g. ``norm_match: "{root}/lowrank_SI+FD_seed-{seed}/dynamics.jsonl"`` names
    the same seed's run of another grid (the normalization experiment)."""
    names = {"root": root, **values}
    filled = {}
    for key, value in values.items():
        if isinstance(value, str) and "{" in value:
            try:
                value = value.format_map(names)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(f"sweep value {key}={value!r} names {error}, which is neither root nor a "
                                 "config key of the job") from None
        filled[key] = value
    return filled


def job_status(job: Job) -> str:
    """``done`` (finished with this config: skipped), ``partial`` (a checkpoint to resume from)
    or ``new``. A folder holding another configuration raises ``FileExistsError``."""
    if is_complete(job.config):
        return "done"
    return "partial" if (job.out / LAST).exists() else "new"


def table_keys(jobs: Sequence[Job]) -> tuple[str, ...]:
    """Row keys of the sweep's results table: family and method first (``init``/``reg`` axes are
    shown as their ``method`` label), then every other axis but the seed (rows average over seeds)."""
    axes = {("method" if k in ("init", "reg") else k): None for job in jobs for k in job.values}
    lead = ("family", "method") if {"family", "method"} & set(axes) else ()
    return (*lead, *(k for k in axes if k not in ("family", "method", "seed")))
