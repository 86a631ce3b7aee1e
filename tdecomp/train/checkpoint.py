"""Atomic checkpoints that never lose the previous good one, and RNG state capture.

``save_checkpoint`` writes ``last.pt.tmp``, fsyncs it, hard-links the current ``last.pt`` to
``previous.pt`` and atomically renames the new file over ``last.pt``: at every instant
``last.pt`` is a complete checkpoint and ``previous.pt`` the one before it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST, PREVIOUS = "last.pt", "previous.pt"


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be read (a bad input file, as ``json.JSONDecodeError`` is)."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], folder: Path) -> Path:
    """Write ``state`` to ``folder/last.pt`` atomically, keeping the old one as ``previous.pt``."""
    folder.mkdir(parents=True, exist_ok=True)
    last, tmp = folder / LAST, folder / (LAST + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if last.exists():
        link = folder / (PREVIOUS + ".tmp")
        link.unlink(missing_ok=True)
        os.link(last, link)
        os.replace(link, folder / PREVIOUS)
    os.replace(tmp, last)
    _fsync_dir(folder)
    return last


def load_checkpoint(folder: Path, map_location: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The state in ``folder/last.pt`` (``None`` if absent), loaded with ``weights_only=True``."""
    last = folder / LAST
    if not last.exists():
        return None
    try:
        return torch.load(last, map_location=map_location, weights_only=True)
    except Exception as err:  # any unpickling/zip error means the file is unusable
        previous = folder / PREVIOUS
        fix = (
            f"to continue from the epoch before, copy {previous} over {last} and rerun with resume=true"
            if previous.exists()
            else f"no {PREVIOUS} exists: remove {folder} and start again"
        )
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {last} cannot be read ({reason}); {fix}") from err


def read_checkpoint(source: Path | str, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """What a run folder's ``last.pt`` or a checkpoint file holds (``weights_only``)."""
    path = Path(source)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass a run folder holding {LAST} or a checkpoint file")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model_weights(source: Path | str, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """A model ``state_dict`` from a run folder (its ``last.pt``), a trainer checkpoint (its
    ``"model"`` entry) or a file holding a plain ``state_dict``."""
    state = read_checkpoint(source, map_location)
    return state["model"] if isinstance(state.get("model"), dict) else state


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states, as tensors/tuples that ``weights_only`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """torch.load turns tuples inside lists into lists; random.setstate needs nested tuples."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
