"""Name → implementation tables, so experiments choose parts by name in YAML.

A :class:`Registry` is one kind of pluggable part (tie policies, metrics, datasets, ...); the
registries themselves are declared together in :mod:`calm_rag.registries`. Adding a part is one
decorated function or class::

    @TIE_POLICIES.register("last-seen")
    def last_seen(tied, samples, config): ...
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from calm_rag.errors import InputError

T = TypeVar("T")
_MISSING: Any = object()


class RegistryError(TypeError):
    """A programming mistake in registering a part: a taken name or a part of the wrong shape."""


class Registry(Generic[T]):
    """A named table of one kind of pluggable part.

    ``modules`` are imported on the first lookup, so the parts shipped with calm_rag are
    there without this module importing them (which would import in a cycle). ``base``
    (a class, or ``"module:Class"`` resolved on first use) is what a registered class must
    subclass or a registered value must be an instance of; ``arity`` is the number of
    positional arguments a registered function must accept.
    """

    def __init__(self, kind: str, *, modules: tuple[str, ...] = (),
                 base: type | str | None = None, arity: int | None = None) -> None:
        self.kind = kind
        self._modules = modules
        self._base = base
        self._arity = arity
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, item: T = _MISSING) -> Any:
        """``@registry.register("name")`` on a function or class, or ``register(name, value)``."""
        if item is not _MISSING:
            return self._add(name, item)
        return lambda decorated: self._add(name, decorated)

    def _add(self, name: str, item: T) -> T:
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._items and self._items[name] is not item:
            raise RegistryError(f"a {self.kind} named {name!r} is already registered "
                                f"({_origin(self._items[name])})")
        self._check_shape(name, item)
        self._items[name] = item
        return item

    def _check_shape(self, name: str, item: Any) -> None:
        base = self._base
        if isinstance(base, str):
            module, _, attr = base.partition(":")
            base = self._base = getattr(importlib.import_module(module), attr)
        if base is not None:
            ok = issubclass(item, base) if isinstance(item, type) else isinstance(item, base)
            if not ok:
                raise RegistryError(f"{self.kind} {name!r} must be a {base.__name__}, "
                                    f"got {item!r}")
        if self._arity is not None:
            try:
                inspect.signature(item).bind(*range(self._arity))
            except (TypeError, ValueError):
                raise RegistryError(f"{self.kind} {name!r} must be callable with "
                                    f"{self._arity} positional arguments") from None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # a module that registers may look names up while it loads
            for module in self._modules:
                importlib.import_module(module)

    def get(self, name: str, field: str | None = None) -> T:
        """The part named ``name``; an unknown name is an InputError that lists the names."""
        self._load()
        if not isinstance(name, str) or name not in self._items:
            raise InputError(f"unknown {self.kind} {name!r}", field=field or self.kind,
                             hint=f"use one of {', '.join(self)}")
        return self._items[name]

    def check(self, name: str, field: str) -> str:
        """``name`` if it is registered (a config check), else an InputError on ``field``."""
        self.get(name, field)
        return name

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __len__(self) -> int:
        return len(self.names())

    def keys(self) -> list[str]:
        return self.names()

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._items[name]) for name in self.names()]

    def unregister(self, name: str) -> None:
        """Remove a part (for tests that register throwaway parts)."""
        self._items.pop(name, None)

    def unregister_module(self, module: str) -> None:
        """Remove the parts defined in ``module`` or its submodules (a plugin that failed
        half-way, so that the fixed plugin registers the same names again)."""
        for name, item in list(self._items.items()):
            owner = getattr(_defined(item), "__module__", None)
            if isinstance(owner, str) and (owner == module or owner.startswith(f"{module}.")):
                del self._items[name]


def _defined(item: Any) -> Any:
    """The function or class a registered value wraps (a metric's ``compute``), else itself."""
    inner = getattr(item, "compute", None) or getattr(item, "__wrapped__", None)
    return inner if callable(inner) and not isinstance(item, type) else item


def _origin(item: Any) -> str:
    """Where a part was defined: its file and line when Python knows them, else its name."""
    item = _defined(item)
    name = getattr(item, "__qualname__", type(item).__name__)
    try:
        file = inspect.getsourcefile(item)
        line = inspect.getsourcelines(item)[1]
    except (TypeError, OSError):
        return f"{getattr(item, '__module__', '?')}.{name}"
    return f"{name} at {file}:{line}"

