"""What a run ran on, for its ``summary.json``: the code, the library versions, the hardware.

``code``: ``version`` (the package's), and when the package is imported from a git checkout
(its ``__init__.py`` tracked by git) the checkout's ``git_commit`` and ``git_dirty`` (tracked
files modified, as ``git describe --dirty``); both None when it is not a checkout, git is missing
or does not answer within :data:`GIT_TIMEOUT_S`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

GIT_TIMEOUT_S = 5.0
# distributions whose versions decide a run's numbers besides torch (importlib.metadata names)
LIBRARIES = ("tensorly", "tensorly-torch", "numpy")
PACKAGE = "tdecomp"


def _git(folder: Path, *args: str) -> str | None:
    """``git args`` run in ``folder``: its stripped output, or None if it fails or times out."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """``{"version", "git_commit", "git_dirty"}`` of the imported package (module docstring)."""
    return dict(_code_version())


@functools.cache  # the code a process imported does not change while it runs
def _code_version() -> dict[str, Any]:
    package = importlib.import_module(PACKAGE)
    folder = Path(package.__file__).parent
    commit = dirty = None
    if _git(folder, "ls-files", "--error-unmatch", "--", "__init__.py") is not None:
        commit = _git(folder, "rev-parse", "HEAD")
        status = _git(folder, "status", "--porcelain", "--untracked-files=no")
        dirty = None if commit is None or status is None else bool(status)
    return {"version": package.__version__, "git_commit": commit, "git_dirty": dirty}


def library_versions() -> dict[str, str | None]:
    """Python's and torch's versions (torch's with its build, e.g. ``2.4.1+cu121``, which its
    distribution metadata may omit) and each of :data:`LIBRARIES`' installed versions (None if absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_name(device: torch.device) -> str:
    """``"cpu"``, or e.g. ``"cuda:0 NVIDIA H100 80GB HBM3"``."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return str(device)


def provenance(device: torch.device, world_size: int) -> dict[str, Any]:
    """The summary's ``code``, ``versions``, ``device``, ``threads`` (torch's intra-op threads)
    and ``world_size`` (distributed processes)."""
    return {"code": code_version(), "versions": library_versions(), "device": device_name(device),
            "threads": torch.get_num_threads(), "world_size": world_size}
