"""Run-folder bookkeeping shared by ``demo`` and ``sweep``: is a run already finished?"""

from __future__ import annotations

import json
from pathlib import Path

from .. import yaml_values
from ..config import TrainConfig
from ..run_files import CONFIG, SUMMARY

# stricter than a resume (TrainConfig.conflicts' default): a finished run is reused only for the
# same experiment, so e.g. other epochs or another device is a clash, not a continuation
IGNORED_KEYS = ("resume", "progress", "workers", "out")


def is_complete(config: TrainConfig) -> bool:
    """True if ``config.out`` holds a finished run of the same configuration.

    A folder holding a *different* configuration raises ``FileExistsError`` rather than being
    overwritten or silently reused.
    """
    out = Path(config.out)
    saved_path, summary_path = out / CONFIG, out / SUMMARY
    if not saved_path.exists():
        return False
    saved = yaml_values.load(saved_path.read_text())
    differing = sorted(config.conflicts(saved, may_change=IGNORED_KEYS))
    if differing:
        raise FileExistsError(f"{out} holds a run with a different configuration ({', '.join(differing)}); "
                              "choose another out= or remove it")
    if not summary_path.exists():
        return False
    summary = json.loads(summary_path.read_text())  # finished: all epochs, or max_steps reached first
    return summary.get("epochs") == config.epochs or bool(config.max_steps and summary.get("steps") == config.max_steps)
