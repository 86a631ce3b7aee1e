"""Run records: one compact JSON object per finished run, read alike from run folders and records files.

A run folder holds ``config.yaml``, ``metrics.jsonl`` and ``summary.json`` (:mod:`tdecomp.run_files`).
Its *record* is one line of a ``.jsonl`` file, small enough to commit::

    {"run": "lowrank_SI+FD_rank-0.1_seed-0",            # the folder's name below its sweep root
     "config": {"family": "lowrank", "seed": 0, …},     # keys away from TrainConfig's defaults (+ ALWAYS)
     "summary": {…},                                     # summary.json as written
     "curve": {"epoch": [1, 2, …], "train_loss": […], "test_acc": […], …}}   # per epoch, 6 significant digits

Every results function takes run folders (or folders holding them) and records files interchangeably
(:func:`load_runs`): a record reads back as the same :class:`RunResult` as its folder (the config
completed with the current defaults, as :meth:`~tdecomp.config.TrainConfig.conflicts` reads an older
config.yaml), so ``tdecomp compare docs/data/x.jsonl`` prints what ``tdecomp compare runs/x`` printed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import run_files, yaml_values
from .config import default_values, migrate_family_options
from .methods import method_label

RECORDS_SUFFIX = ".jsonl"
# kept in every record even at their default value: what a reader looks for first
ALWAYS = ("family", "model", "data", "seed", "rank", "init", "reg")
# bookkeeping of one machine's run, meaningless in a record
BOOKKEEPING = ("out", "resume", "progress")
# per-epoch fields of metrics.jsonl a record keeps (besides every val_*/test_* metric)
CURVE_FIELDS = ("epoch", "step", "lr", "train_loss", "train_acc", "decay_integral")
CURVE_PREFIXES = ("val_", "test_")
SIGNIFICANT_DIGITS = 6


@dataclass(frozen=True)
class RunResult:
    """A finished run: its ``name`` (folder name below its root), where it was read (``source``: the
    folder, or ``FILE.jsonl#name``), its full ``config``, ``summary`` and learning ``curve`` (field →
    one value per epoch, ``None`` where an epoch lacks the field)."""

    name: str
    source: str
    config: dict[str, Any]
    summary: dict[str, Any]
    curve: dict[str, list[Any]]

    @property
    def method(self) -> str:
        return method_label(self.config)


def _rounded(value: Any) -> Any:
    """A float to :data:`SIGNIFICANT_DIGITS` significant digits (ints, None, NaN and ±inf as they are)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def curve_of(epochs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Column form of ``metrics.jsonl`` records: the fields of :data:`CURVE_FIELDS` and every
    ``val_*``/``test_*`` metric, floats rounded to 6 significant digits."""
    fields = [k for e in epochs for k in e if k in CURVE_FIELDS or k.startswith(CURVE_PREFIXES)]
    return {k: [_rounded(e.get(k)) for e in epochs] for k in dict.fromkeys(fields)}


def read_run(folder: Path, name: str) -> RunResult:
    """The run in ``folder`` (``config.yaml``, ``summary.json``, ``metrics.jsonl`` if present)."""
    saved = yaml_values.load((folder / run_files.CONFIG).read_text()) or {}
    metrics = folder / run_files.METRICS
    epochs = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.is_file() else []
    return RunResult(name, str(folder), {**default_values(), **migrate_family_options(saved)},
                     json.loads((folder / run_files.SUMMARY).read_text()), curve_of(epochs))


def to_record(run: RunResult) -> dict[str, Any]:
    """The record of ``run``: its name, config keys away from the defaults (and :data:`ALWAYS`; not
    :data:`BOOKKEEPING`), summary and curve."""
    defaults = default_values()
    config = {k: v for k, v in run.config.items()
              if k not in BOOKKEEPING and (k in ALWAYS or k not in defaults or v != defaults[k])}
    return {"run": run.name, "config": config, "summary": run.summary, "curve": run.curve}


def read_records(path: Path) -> list[RunResult]:
    """The runs of a records file (one :func:`to_record` object per line)."""
    runs = []
    defaults = default_values()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or not {"run", "config", "summary"} <= set(record):
            raise ValueError(f"{path}:{number} is not a run record (a JSON object with run, config, summary and "
                             "curve); write records with tdecomp records RUN_DIR … --out FILE.jsonl")
        config = {**defaults, **migrate_family_options(record["config"])}
        runs.append(RunResult(record["run"], f"{path}#{record['run']}", config, record["summary"],
                              record.get("curve", {})))
    return runs


def write_records(runs: Iterable[RunResult], path: Path) -> Path:
    """``runs`` as a records file at ``path`` (sorted by name; ``ValueError`` if two share a name)."""
    runs = sorted(runs, key=lambda r: r.name)
    for a, b in zip(runs, runs[1:]):
        if a.name == b.name:
            raise ValueError(f"two runs are named {a.name!r} ({a.source} and {b.source}); write records of "
                             "their roots to separate files (each file names its runs uniquely)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(to_record(r), separators=(",", ":")) + "\n" for r in runs))
    return path


def find_runs(roots: Iterable[Path | str]) -> list[Path]:
    """Run folders (those holding ``summary.json``) at or below each root."""
    found: list[Path] = []
    for root in map(Path, roots):
        found += sorted(p.parent for p in root.rglob(run_files.SUMMARY)) if root.is_dir() else []
    return found


def is_records_file(source: Path | str) -> bool:
    return Path(source).suffix == RECORDS_SUFFIX and Path(source).is_file()


def load_runs(sources: Iterable[Path | str]) -> list[RunResult]:
    """Finished runs from ``sources``: records files (``*.jsonl``) and run folders or folders holding them
    (named by their path below the source), each run once even if two sources reach it;
    ``FileNotFoundError`` if there are none."""
    sources = [Path(s) for s in sources]
    runs: dict[Any, RunResult] = {}
    for source in sources:
        if is_records_file(source):
            for run in read_records(source):
                runs.setdefault((source.resolve(), run.name), run)
            continue
        for folder in find_runs([source]):
            name = folder.relative_to(source).as_posix() if folder != source else folder.name
            if folder.resolve() not in runs:
                runs[folder.resolve()] = read_run(folder, name)
    if not runs:
        raise FileNotFoundError(f"no finished run (a folder with summary.json, or a records file) in "
                                f"{', '.join(map(str, sources))}")
    return list(runs.values())
