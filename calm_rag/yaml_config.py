"""Typed dataclass configs from YAML, with errors that name the file, the line and the key.

A config is a (frozen) dataclass whose field docstrings are its manual; nested dataclasses are
groups of keys, ``list[SomeDataclass]`` a list of groups. Unknown keys and wrong types are
refused with the dotted key (``faiss.factory``) and its line in the YAML file.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from calm_rag.errors import InputError

C = TypeVar("C")

# Fields marked internal are filled by the loader, never read from YAML.
INTERNAL = {"internal": True}


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """Parse a YAML file; return the data and the line of every dotted key (``a.b[0].c``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(f"malformed YAML: {problem}", path=path,
                         line=mark.line + 1 if mark else None) from None
    return data, lines


def _key_lines(node: Any, prefix: str = "", lines: dict[str, int] | None = None
               ) -> dict[str, int]:
    import yaml

    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}[{i}]"
            lines[key] = item.start_mark.line + 1
            _key_lines(item, key, lines)
    return lines


def from_mapping(cls: type[C], data: Any, *, path: str | Path | None = None,
                 lines: dict[str, int] | None = None, prefix: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, checking keys and types; errors name the key."""
    where = _Where(path, lines or {})
    return where.build(cls, data, prefix)


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


class _Where:
    """Carries the file and the key lines while a config is built."""

    def __init__(self, path: str | Path | None, lines: dict[str, int]) -> None:
        self.path = path
        self.lines = lines

    def error(self, key: str, message: str, hint: str | None = None) -> InputError:
        return InputError(message, path=self.path, line=self.lines.get(key), field=key or None,
                          hint=hint)

    def build(self, cls: type, data: Any, prefix: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(prefix, f"expected a mapping of keys, got {_kind(data)}")
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        hints = typing.get_type_hints(cls)
        for key in data:
            if key not in fields:
                raise self.error(_join(prefix, str(key)), "unknown key",
                                 hint=f"known keys: {', '.join(fields)}")
        values = {}
        for name, f in fields.items():
            key = _join(prefix, name)
            if name in data:
                values[name] = self.convert(hints[name], data[name], key)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(key, "missing", hint="this key is required")
        try:
            return cls(**values)
        except InputError as err:  # a check in __post_init__: name the key in this file
            key = _join(prefix, err.field) if err.field else prefix
            raise self.error(key, err.message, err.hint) from None

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
            items = [self.convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                raise self.error(key, f"expected a mapping of keys, got {_kind(value)}")
            return {str(k): self.convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, key)
        return self.scalar(hint, value, key)

    def scalar(self, hint: Any, value: Any, key: str) -> Any:
        # bool is an int in Python, but `chunk_size: true` is a mistake, not a 1.
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint in (int, float) and isinstance(value, bool):
            raise self.error(key, f"expected {hint.__name__}, got a boolean")
        if hint is Any or isinstance(value, hint):
            return value
        raise self.error(key, f"expected {getattr(hint, '__name__', hint)}, got {_kind(value)}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
