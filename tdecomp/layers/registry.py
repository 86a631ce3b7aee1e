"""The family registry: a family is a :class:`~tdecomp.layers.base.FactorizedLayer` subclass
registered under a name with :func:`register_family`.

Built-in families register when :mod:`tdecomp.layers` imports their files. A family in another
package registers through the entry-point group :data:`ENTRY_POINT_GROUP`, e.g. in its
``pyproject.toml``::

    [project.entry-points."tdecomp.families"]
    tensor_ring = "my_package.tensor_ring:TensorRingLayer"   # the class (registered under this name)
    more = "my_package.families"                              # or a module whose import registers them

Entry points are loaded when the registry is first queried (:func:`available_families`,
:func:`get_family`, a config's ``family=…``), so ``import tdecomp`` imports no other package.
"""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from .._registry import Registry

if TYPE_CHECKING:
    from .base import FactorizedLayer

ENTRY_POINT_GROUP = "tdecomp.families"


def load_entry_points() -> None:
    """Register the families that installed packages declare in :data:`ENTRY_POINT_GROUP`; one
    that fails to load is skipped with a warning naming it (tdecomp keeps working without it)."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _register_entry_point(point)
        except Exception as err:  # a broken third-party package must not break the built-in families
            warnings.warn(f"tdecomp: skipping family entry point {point.name} = {point.value} "
                          f"({type(err).__name__}: {err})", stacklevel=2)


def _register_entry_point(point: EntryPoint) -> None:
    loaded = point.load()  # a module registers its families on import
    registered = [FAMILIES.get(name) for name in FAMILIES.names()]
    if isinstance(loaded, type) and loaded not in registered:  # a class its module did not register itself
        # by name: importing base here would close the cycle base → ranks → registry
        if not any(f"{c.__module__}.{c.__qualname__}" == "tdecomp.layers.base.FactorizedLayer" for c in loaded.__mro__):
            raise TypeError(f"{loaded.__name__} is not a tdecomp.FactorizedLayer subclass")
        register_family(point.name)(loaded)


FAMILIES: Registry[type[FactorizedLayer]] = Registry("family", load=load_entry_points)


def register_family(name: str):
    """Class decorator registering a :class:`~tdecomp.layers.base.FactorizedLayer` subclass under ``name``.

    A new family (e.g. tensor ring) is one file with ``@register_family("tr")`` on its class.
    """

    def decorator(cls: type[FactorizedLayer]) -> type[FactorizedLayer]:
        FAMILIES.register(name)(cls)
        cls.family = name
        return cls

    return decorator


def available_families() -> tuple[str, ...]:
    """Names of the registered families, sorted."""
    return FAMILIES.names()


def get_family(name: str) -> type[FactorizedLayer]:
    """The layer class registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    return FAMILIES.get(name)
