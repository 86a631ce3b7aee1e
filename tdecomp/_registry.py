"""Name → factory registries (families, models, datasets) with errors that list valid names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ._validation import check_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects, filled by the :meth:`register` decorator.

    ``kind`` is the argument name used in errors, e.g. ``family='svd' is not valid; expected one
    of: 'cp', 'lowrank', …``. ``load``, if given, runs once, when the registry is first queried
    (e.g. to register what installed packages declare), not when it is filled.
    """

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None  # first: what it loads may query the registry
            load()
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        check_choice(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._loaded()))

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()
