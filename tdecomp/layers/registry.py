"""The family registry: a family is a :class:`~tdecomp.layers.base.FactorizedLayer` subclass
registered under a name with :func:`register_family`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._registry import Registry

if TYPE_CHECKING:
    from .base import FactorizedLayer

FAMILIES: Registry[type[FactorizedLayer]] = Registry("family")


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
