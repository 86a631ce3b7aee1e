"""Run-folder bookkeeping shared by ``demo`` and ``sweep``: is a run already finished?"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..config import TrainConfig

IGNORED_KEYS = ("resume", "progress", "workers", "out")


def is_complete(config: TrainConfig) -> bool:
    """True if ``config.out`` holds a finished run of the same configuration.

    A folder holding a *different* configuration raises ``FileExistsError`` rather than being
    overwritten or silently reused.
    """
    out = Path(config.out)
    saved_path, summary_path = out / "config.yaml", out / "summary.json"
    if not saved_path.exists():
        return False
    saved = yaml.safe_load(saved_path.read_text())
    wanted = config.to_dict()
    differing = sorted(k for k in wanted if k not in IGNORED_KEYS and saved.get(k) != wanted[k])
    if differing:
        raise FileExistsError(f"{out} holds a run with a different configuration ({', '.join(differing)}); "
                              "choose another out= or remove it")
    return summary_path.exists() and json.loads(summary_path.read_text()).get("epochs") == config.epochs
