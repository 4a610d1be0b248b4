"""Typed dataclass configs from YAML: one loader, one manual, errors that say file:line and key.

A config group is a frozen dataclass; the string literal right below a field is its manual
(``describe`` prints it). Nested dataclasses are groups of keys, ``tuple[SomeDataclass, ...]`` a
list of groups. The loader checks keys, types and finiteness, reads YAML 1.1's number strings
(``5e-6``) as floats, and runs each group's ``__post_init__`` checks; those raise
``InputError(field="bare_name")`` and the loader names the full dotted key, once, with the
file and line (or the ``--set`` that gave the value).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from calm_rag.errors import InputError, combined, flatten

C = TypeVar("C")

# Fields marked internal are filled by the loader, never read from YAML.
INTERNAL = {"internal": True}
MAX_SEED = 2**31 - 1  # numpy and the engines take 32-bit seeds; shards add their index
# Every whole number a config holds (counts, sizes, seeds), whatever its own check: past it a
# JSON reader (a manifest, a run record) no longer holds the number exactly.
MAX_INT = 2**53
MAX_NODES = 100_000  # values in one YAML document once aliases are expanded
MAX_DEPTH = 64
# YAML 1.2 floats that YAML 1.1 (PyYAML) leaves as strings: 5e-6, 1E-3, -2.5e+3.
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


# ---------------------------------------------------------------------------- YAML


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """Parse a YAML file; return the data and the line of every dotted key (``a.b[0].c``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text (byte {err.start})", path=path,
                         hint="save the file as UTF-8") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: str | Path | None = None) -> tuple[Any, dict[str, int]]:
    """Parse YAML text safely: no duplicate keys, bounded alias expansion and nesting."""
    import yaml

    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[str, int] = {}
        _check_size(node, path)
        _key_lines(node, "", lines, path, 0)
        return loader.construct_document(node), lines
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err)
        raise InputError(f"malformed YAML: {' '.join(str(problem).split())}", path=path,
                         line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise InputError("malformed YAML: nested too deeply", path=path) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_size(root: Any, path: str | Path | None) -> None:
    """Refuse documents whose aliases expand to more than MAX_NODES values (an alias bomb):
    sizes are counted once per node, so a shared node costs nothing to count."""
    import yaml

    sizes: dict[int, int] = {}
    pending: set[int] = set()

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in pending:
            raise InputError("malformed YAML: an alias refers to itself", path=path,
                             line=node.start_mark.line + 1)
        pending.add(id(node))
        children: Iterable[Any] = ()
        if isinstance(node, yaml.MappingNode):
            children = itertools.chain.from_iterable(node.value)
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise InputError(f"the YAML expands to more than {MAX_NODES} values "
                                 "(aliases of aliases)", path=path,
                                 line=node.start_mark.line + 1, hint="write the values out")
        pending.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)


def _key_lines(node: Any, prefix: str, lines: dict[str, int], path: str | Path | None,
               depth: int) -> None:
    import yaml

    if depth > MAX_DEPTH:
        raise InputError(f"nested more than {MAX_DEPTH} levels", path=path,
                         line=node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: the merged keys keep their own lines
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            key = _join(prefix, name)
            line = key_node.start_mark.line + 1
            if name in seen:
                raise InputError(f"duplicate key (first on line {seen[name]})", path=path,
                                 line=line, field=_printable(key), hint="keep one of them")
            seen[name] = lines[key] = line
            _key_lines(value_node, key, lines, path, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}[{i}]"
            lines.setdefault(key, item.start_mark.line + 1)
            _key_lines(item, key, lines, path, depth + 1)


# ---------------------------------------------------------------------------- loader


def from_mapping(cls: type[C], data: Any, *, path: str | Path | None = None,
                 lines: dict[str, int] | None = None, prefix: str = "",
                 overrides: dict[str, str] | None = None) -> C:
    """Build dataclass ``cls`` from ``data``, checking keys, types and values.

    ``lines`` maps dotted keys to their line in ``path``; ``overrides`` maps the keys set on
    the command line to the ``--set`` text, so their errors name that instead of the file.
    """
    try:
        return _Where(path, lines or {}, overrides or {}).build(cls, data, prefix)
    except InputError as err:  # several: in the file's order (a --set's after the file's)
        errors = flatten([err])
        if len(errors) == 1:
            raise
        errors.sort(key=lambda one: (one.line is None, one.line or 0))
        raise combined(errors) from None


def typed_by(key: str, types_of: Callable[[], dict[str, type]]) -> dict[str, Any]:
    """Metadata of a group whose dataclass is chosen by the sibling field ``key`` (like
    ``generator.options`` by ``generator.backend``); ``types_of()`` maps values to classes.

    The loader hands such a field its mapping as it is; the class's ``__post_init__`` builds
    it with :func:`from_mapping` once the sibling is known, and ``describe`` lists each type.
    """
    return {"typed_by": key, "types_of": types_of}


def one_of(field: str, value: Any, allowed: Iterable[Any]) -> None:
    """A check for ``__post_init__``: ``value`` must be one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise InputError(f"{value!r} is not allowed", field=field,
                         hint=f"use one of {', '.join(map(str, allowed))}")


def at_least(obj: Any, low: float, *names: str, hint: str | None = None) -> None:
    """A check for ``__post_init__``: each named field is ``low`` or more (or None)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < low:
            raise InputError(f"must be at least {low:g}, got {value!r}", field=name, hint=hint)


def at_most(obj: Any, high: float, *names: str, why: str) -> None:
    """A check for ``__post_init__``: each named field is ``high`` or less (or None); ``why``
    (the reason for the bound) goes into the message."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value > high:
            raise InputError(f"must be at most {high:g}, got {value!r}: {why}", field=name)


def check_seed(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value <= MAX_SEED:
            raise InputError(f"must lie in [0, {MAX_SEED}], got {value!r}", field=name)


def non_defaults(obj: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of dataclass ``obj`` that differ from the class defaults."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else dataclasses.MISSING)
        value = getattr(obj, f.name)
        if value != default:
            out[f.name] = plain(value)
    return out


class _Where:
    """Carries the file, the key lines and the overrides while a config is built."""

    def __init__(self, path: str | Path | None, lines: dict[str, int],
                 overrides: dict[str, str]) -> None:
        self.path = path
        self.lines = lines
        self.overrides = overrides

    def error(self, key: str, message: str, hint: str | None = None) -> InputError:
        for given, text in self.overrides.items():
            if key == given or key.startswith((f"{given}.", f"{given}[")):
                return InputError(message, path=f"--set {_printable(text)}",
                                  field=_printable(key) or None, hint=hint)
        line, parent = self.lines.get(key), key
        while line is None:  # a key left out of the file: the line of its group
            shorter = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", parent)
            if shorter == parent:
                break
            parent, line = shorter, self.lines.get(shorter)
        return InputError(message, path=self.path, line=line, field=_printable(key) or None,
                          hint=hint)

    def build(self, cls: type, data: Any, prefix: str) -> Any:
        """``cls`` from ``data``. Keys are independent, so every unknown key and every bad
        value of this group (and of its groups) is reported at once, not the first only."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(prefix, f"expected a mapping of keys, got {_kind(data)}")
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        hints = typing.get_type_hints(cls)
        # Old keys the class still takes (deprecated): handed on as given, it moves them.
        old: tuple[str, ...] = getattr(cls, "deprecated_keys", ())
        errors = [self.error(_join(prefix, str(key)), "unknown key",
                             hint=_known_keys_hint(str(key), list(fields)))
                  for key in data if key not in fields and key not in old]
        values: dict[str, Any] = {key: data[key] for key in old if key in data}
        for name, f in fields.items():
            key = _join(prefix, name)
            if name in data:
                values[name] = self.attempt(errors, self.convert, hints[name], data[name], key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(self.error(key, "missing", hint="this key is required"))
        if errors:  # the group's own checks need every field: they wait for these fixes
            raise combined(errors)
        try:
            return cls(**values)
        except InputError as err:  # a check in __post_init__: name the key in this file
            raise combined([self.error(_join(prefix, one.field) if one.field else prefix,
                                       one.message, one.hint) for one in flatten([err])]
                           ) from None

    @staticmethod
    def attempt(errors: list[InputError], convert: Callable[..., Any], *args: Any) -> Any:
        """``convert(*args)``, or None with its error added to ``errors`` (checked later)."""
        try:
            return convert(*args)
        except InputError as err:
            errors.append(err)
            return None

    def convert(self, hint: Any, value: Any, key: str) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.convert(inner, value, key)
        if origin is Literal:
            if value not in args:
                raise self.error(key, f"{value!r} is not allowed",
                                 hint=f"use one of {', '.join(map(str, args))}")
            return value
        if origin in (list, tuple):
            if isinstance(value, tuple):  # a default or a value set in code
                value = list(value)
            if not isinstance(value, list):
                raise self.error(key, f"expected a list, got {_kind(value)}")
            return self.each(origin, args[0], dict(enumerate(value)), key)
        if origin is dict:
            if not isinstance(value, dict):
                raise self.error(key, f"expected a mapping of keys, got {_kind(value)}")
            return self.each(dict, args[1], value, key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                return value
            return self.build(hint, value, key)
        return self.scalar(hint, value, key)

    def each(self, kind: type, hint: Any, items: dict[Any, Any], key: str) -> Any:
        """A list's items (``items`` by index) or a mapping's values, each converted; every bad
        one reported."""
        errors: list[InputError] = []
        done = {k: self.attempt(errors, self.convert, hint, v,
                                f"{key}.{k}" if kind is dict else f"{key}[{k}]")
                for k, v in items.items()}
        if errors:
            raise combined(errors)
        if kind is dict:
            return {str(k): v for k, v in done.items()}
        return list(done.values()) if kind is list else tuple(done.values())

    def scalar(self, hint: Any, value: Any, key: str) -> Any:
        # bool is an int in Python, but `chunk_size: true` is a mistake, not a 1.
        if hint in (int, float) and isinstance(value, bool):
            raise self.error(key, f"expected {hint.__name__}, got a boolean")
        if hint is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 5e-6 as a string
        if hint is float and isinstance(value, int):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value}")
        if hint is int and isinstance(value, int) and abs(value) > MAX_INT:
            raise self.error(key, f"must lie within ±2^53, got {value}: no count or size "
                             "means anything past it, and JSON records hold whole numbers "
                             "exactly only up to it")
        if hint is Any or isinstance(value, hint):
            return value
        raise self.error(key, f"expected {getattr(hint, '__name__', hint)}, got {_kind(value)}")


def _known_keys_hint(key: str, known: list[str]) -> str:
    """What an unknown key may have meant (the close known names), then every known key."""
    import difflib

    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    listed = f"known keys: {', '.join(known)}" if known else "this group takes no keys"
    return f"did you mean {' or '.join(close)}? {listed}" if close else listed


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _printable(text: str) -> str:
    """``text`` on one line: an error is printed on one line whatever a key holds."""
    return text if text.isprintable() else repr(text)[1:-1]


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# ---------------------------------------------------------------------------- manual


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: the string literal right below it in the class body."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """The manual of ``cls``: one line per key with its type, default and documentation.

    ``defaults`` is the instance whose values are the effective defaults (a group's default
    in its parent may differ from the group class's own defaults).
    """
    docs, hints, lines = field_docs(cls), typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key, hint = f"{prefix}{f.name}", hints[f.name]
        default = _default(f, defaults)
        if "typed_by" in f.metadata:
            for choice, group in f.metadata["types_of"]().items():
                lines.append(f"{key} ({f.metadata['typed_by']}: {choice}): {_summary(group)}")
                lines += describe(group, f"{key}.", None)
            continue
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            if inner is hint:
                lines.append(f"{key}: {docs.get(f.name) or _summary(inner)}")
                lines += describe(inner, f"{key}.", default)
            else:
                lines.append(f"{key} (a list of): {docs.get(f.name) or _summary(inner)}")
                lines += describe(inner, f"{key}[].", None)
            continue
        said = "required" if default is dataclasses.MISSING else f"default {_plain(default)!r}"
        lines.append(f"{key} ({_type_name(hint)}, {said}): {docs.get(f.name, '')}")
    return lines


def _default(f: dataclasses.Field, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else cls.__name__


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _plain(value: Any) -> Any:
    """Tuples as lists and dataclasses as mappings, recursively, as YAML would say them;
    internal fields (filled by the loader or the pipeline, never read from YAML) left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                 if not f.metadata.get("internal")}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """A config as plain YAML-ready values (tuples as lists, groups as mappings)."""
    return _plain(value)
