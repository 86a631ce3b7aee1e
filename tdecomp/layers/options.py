"""A family's options: the schema each family declares (``FactorizedLayer.options``), read by
:func:`tdecomp.factorize`, :class:`tdecomp.config.TrainConfig` (``family_options.NAME=value``),
``tdecomp train --help`` and the sweep validator."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._validation import check_choice


class UnknownOptionError(TypeError, ValueError):
    """An option name a family does not declare: a ``TypeError`` as for any unexpected keyword
    argument, and a ``ValueError`` for configuration files and the command line."""


@dataclass(frozen=True)
class FamilyOption:
    """One keyword option of a family: its ``name``, value ``type``, ``default``, a one-line ``help``
    and, for a closed set of values, the ``choices``."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] = ()

    def check(self, value: Any, family: str) -> Any:
        """``value`` if it has the option's type (a bool is not an int) and is one of the choices."""
        wrong_bool = isinstance(value, bool) and self.type is not bool
        if wrong_bool or not isinstance(value, self.type):
            raise ValueError(f"family {family!r} option {self.name} must be a {self.type.__name__}, got {value!r}")
        return check_choice(self.name, value, self.choices) if self.choices else value

    def describe(self) -> str:
        """``name=default {choices}: help``, with YAML's spelling of booleans (as a config file writes it)."""
        show = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
        choices = f" {{{', '.join(map(show, self.choices))}}}" if self.choices else ""
        return f"{self.name}={show(self.default)}{choices}: {self.help}"


def check_options(family: str, schema: Sequence[FamilyOption], values: Mapping[str, Any],
                  extra: Collection[str] = ()) -> None:
    """Check ``values`` against ``schema``: :class:`UnknownOptionError` naming the options it does not
    declare (beyond the ``extra`` names the caller takes itself), ``ValueError`` for a bad value."""
    declared = {o.name: o for o in schema}
    unknown = sorted(set(values) - set(declared) - set(extra))
    if unknown:
        valid = ", ".join([*declared, *extra]) or "none"
        raise UnknownOptionError(
            f"family {family!r} got unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    for name, value in values.items():
        if name in declared:
            declared[name].check(value, family)


def with_defaults(schema: Sequence[FamilyOption], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``schema``: ``values`` where given, the default elsewhere (``values`` checked)."""
    return {o.name: values.get(o.name, o.default) for o in schema}


def without_defaults(schema: Sequence[FamilyOption], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that differ from the default, in schema order: equal settings, equal dicts."""
    return {o.name: values[o.name] for o in schema if o.name in values and values[o.name] != o.default}
