"""Where the packaged experiment configs live: ``experiments/configs`` of a checkout, installed as
``tdecomp/experiments/configs`` (the package ``tdecomp.experiments``, pyproject's package-dir)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "tdecomp.experiments"


def configs_folder() -> Path:
    """The folder holding the packaged configs."""
    return Path(str(resources.files(PACKAGE) / "configs"))


def packaged_configs() -> tuple[str, ...]:
    """Names of the packaged configs (``*.yaml`` in :func:`configs_folder`), sorted."""
    return tuple(sorted(p.stem for p in configs_folder().glob("*.yaml")))


def default_config(name: str) -> Path:
    """The packaged config ``<name>.yaml``."""
    path = configs_folder() / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no packaged config {name!r} at {path}")
    return path


def resolve_config(name_or_path: str) -> Path:
    """A YAML path as given, else the packaged config of that name (``digits`` → ``…/digits.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    try:
        return default_config(path.stem if path.suffix in (".yaml", ".yml") else name_or_path)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {name_or_path} does not exist (and no packaged config has "
                                f"that name; packaged: {', '.join(packaged_configs())})") from None
