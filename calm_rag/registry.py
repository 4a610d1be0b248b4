"""Name → implementation tables, so experiments choose parts by name in YAML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from calm_rag.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of pluggable parts (tie policies, extractors, samplers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            self._items[name] = item
            return item

        return add

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._items:
            raise InputError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}",
                             field=field or self.kind)
        return self._items[name]

    def __iter__(self):
        return iter(sorted(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items
