"""The guarded reader under every input: bytes to text to JSON, every failure an InputError.

Whatever a file holds (UTF-16, Latin-1, binary, JSON nested thousands deep, duplicate keys,
``NaN``, lone surrogates, a folder or an unreadable file where a file was expected), reading it
ends in a value or in one :class:`InputError` naming the file, the line and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError

MAX_DOCUMENT_BYTES = 1 << 30
"""The largest whole-file input read (a JSON document, a text file)."""
MAX_LINE_BYTES = 64 << 20
"""The longest JSONL line read."""
MAX_DEPTH = 64
"""How deeply JSON may nest; our files need 4 levels, so this only stops hostile input."""

_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_UTF8_HINT = "save it as UTF-8 text"


def _open_error(path: Path, err: OSError) -> InputError:
    return InputError(f"cannot read: {err.strerror or err}", path=path)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise InputError("is a folder, expected a file", path=path)
    if not path.exists():
        raise InputError("no such file", path=path, hint="check the path")


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """A file's bytes; a folder, a missing, unreadable or too large file is an InputError."""
    path = Path(path)
    _check_file(path)
    limit = MAX_DOCUMENT_BYTES if limit is None else limit
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"too large to read whole ({size} bytes, the limit is {limit})",
                             path=path)
        return path.read_bytes()
    except OSError as err:
        raise _open_error(path, err) from None


def decode(data: bytes, path: str | Path, first_line: int = 1) -> str:
    """UTF-8 text (a BOM allowed at the start); anything else names the line it breaks on."""
    if first_line == 1 and data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        raise InputError(f"not UTF-8 text{_guess(data)} (byte {err.start})", path=path,
                         line=line, hint=_UTF8_HINT) from None
    if "\x00" in text:
        line = first_line + text.count("\n", 0, text.index("\x00"))
        raise InputError(f"not UTF-8 text{_guess(data)} (a NUL byte)", path=path, line=line,
                         hint=_UTF8_HINT)
    return text


def _guess(data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return ": it looks like UTF-16"
    if b"\x00" in data[:4096]:
        return ": it looks like binary data or UTF-16"
    return ""


def read_text(path: str | Path) -> str:
    """A whole text file, decoded as UTF-8 (see :func:`decode`)."""
    return decode(read_bytes(path), path)


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_no_constant)


def parse_json(text: str, path: str | Path, line: int = 1, *, start: int = 0
               ) -> tuple[Any, int]:
    """One JSON value from ``text[start:]``: the value and where it ended.

    ``line`` is the line number of ``text``'s first character; errors name the line of the
    fault (a syntax error) or of the value's start.
    """
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as err:
        # A file cut short fails past its end: name the last line with content, not the
        # empty one after its final newline.
        pos = min(err.pos, len(text.rstrip()))
        column = pos - text.rfind("\n", 0, pos)
        raise InputError(f"malformed JSON: {err.msg} at column {column}", path=path,
                         line=line + text.count("\n", 0, pos)) from None
    except _Duplicate as dup:
        raise InputError(f"duplicate key {dup.key!r} in one JSON object", path=path,
                         line=line + text.count("\n", 0, start),
                         hint="each key may appear once") from None
    except ValueError as err:  # NaN / Infinity from parse_constant
        raise InputError(f"malformed JSON: {err}", path=path,
                         line=line + text.count("\n", 0, start)) from None
    except RecursionError:
        raise _too_deep(path, line + text.count("\n", 0, start)) from None
    try:
        _check_value(value, surrogates=bool(_SURROGATE_ESCAPE.search(text, start, end)))
    except InputError as err:  # only now count lines: the item's line costs a scan
        raise err.at(path=path, line=line + text.count("\n", 0, start)) from None
    return value, end


def _too_deep(path: str | Path | None = None, line: int | None = None) -> InputError:
    return InputError(f"JSON nested more than {MAX_DEPTH} levels deep", path=path, line=line)


def _check_value(value: Any, surrogates: bool) -> None:
    """Bound the nesting, and refuse lone surrogates (they cannot be written back as UTF-8)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise _too_deep()
            children = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            for key, child in children:
                if surrogates and isinstance(key, str) and _SURROGATE.search(key):
                    raise _surrogate()
                stack.append((child, depth + 1))
        elif surrogates and isinstance(item, str) and _SURROGATE.search(item):
            raise _surrogate()


def _surrogate() -> InputError:
    return InputError("a \\ud800-\\udfff escape without its pair (not a character)",
                      hint=_UTF8_HINT)


def loads(text: str, path: str | Path, line: int = 1) -> Any:
    """A whole JSON document (whitespace around it allowed); ``line``: where ``text`` starts."""
    start = len(text) - len(text.lstrip())
    value, end = parse_json(text, path, line, start=start)
    rest = text[end:]
    if rest.strip():
        extra = line + text.count("\n", 0, end + len(rest) - len(rest.lstrip()))
        raise InputError("malformed JSON: extra data after the value", path=path, line=extra)
    return value


def read_json(path: str | Path) -> Any:
    """Load a whole JSON file; every failure names the file (and line)."""
    text = read_text(path)
    if not text.strip():
        raise InputError("the file is empty", path=path)
    return loads(text, path)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold one object."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {json_type(value)}", path=path, line=1)
    return value


def read_jsonl(path: str | Path, *, allow_empty: bool = False
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; errors name the line."""
    path = Path(path)
    _check_file(path)
    seen = False
    try:
        handle = path.open("rb")
    except OSError as err:
        raise _open_error(path, err) from None
    with handle:
        for number, raw in _lines(handle, path):
            line = decode(raw, path, number)
            if not line.strip():
                continue
            obj = loads(line.rstrip("\r\n"), path, number)
            if not isinstance(obj, dict):
                raise InputError(f"expected a JSON object on each line, got {json_type(obj)}",
                                 path=path, line=number)
            seen = True
            yield number, obj
    if not seen and not allow_empty:
        raise InputError("the file is empty", path=path, hint="expected one JSON object a line")


def _lines(handle: Any, path: Path) -> Iterator[tuple[int, bytes]]:
    number = 0
    while True:
        try:
            raw = handle.readline(MAX_LINE_BYTES + 1)
        except OSError as err:
            raise _open_error(path, err) from None
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise InputError(f"line longer than {MAX_LINE_BYTES} bytes", path=path, line=number)
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        yield number, raw


def read_json_array(path: str | Path) -> list[tuple[int, Any]]:
    """Load a JSON array file as ``(line_number, item)`` pairs, so errors can name the line."""
    text = read_text(path)
    if not text.strip():
        raise InputError("the file is empty", path=path)
    offset = len(text) - len(text.lstrip())
    if text[offset] != "[":
        loads(text, path)  # a syntax error is reported as such
        raise InputError("expected a JSON array of objects", path=path, line=1)
    items: list[tuple[int, Any]] = []
    offset += 1
    line, counted = 1, 0
    while True:
        offset = _skip_space(text, offset)
        if offset < len(text) and text[offset] == "]" and not items:
            break
        line += text.count("\n", counted, offset)  # count only the new stretch: linear time
        counted = offset
        item, offset = parse_json(text, path, 1, start=offset)
        items.append((line, item))
        offset = _skip_space(text, offset)
        if offset < len(text) and text[offset] == ",":
            offset += 1
            continue
        if offset < len(text) and text[offset] == "]":
            break
        line += text.count("\n", counted, offset)
        raise InputError("malformed JSON: expected ',' or ']' after an item", path=path,
                         line=line)
    if text[offset + 1:].strip():
        raise InputError("malformed JSON: extra data after the array", path=path,
                         line=line + text.count("\n", counted, offset))
    if not items:
        raise InputError("the file holds an empty array", path=path, line=1)
    return items


def _skip_space(text: str, offset: int) -> int:
    while offset < len(text) and text[offset] in " \t\r\n":
        offset += 1
    return offset


# ---------------------------------------------------------------------------- field types

_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "an object", list: "a list", type(None): "null"}


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {str: "a string", dict: "an object", list: "a list", type(None): "null"}.get(
        type(value), type(value).__name__)


def _matches(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


_MISSING = object()


def expect(obj: dict[str, Any], key: str, kind: type | tuple[type, ...],
           path: str | Path | None = None, line: int | None = None, *,
           default: Any = _MISSING, prefix: str = "") -> Any:
    """``obj[key]`` if it has the JSON type ``kind`` (a tuple: any of them); else InputError.

    Without ``default`` the key is required; ``null`` counts as missing unless ``kind``
    includes ``type(None)``.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    value = obj.get(key, _MISSING)
    if value is _MISSING or (value is None and type(None) not in kinds):
        if default is not _MISSING:
            return default
        raise InputError("missing", path=path, line=line, field=prefix + key)
    if not any(_matches(value, k) for k in kinds):
        wanted = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise InputError(f"expected {wanted}, got {json_type(value)}", path=path, line=line,
                         field=prefix + key)
    return value


def expect_map(obj: dict[str, Any], key: str, kind: type, path: str | Path | None = None,
               line: int | None = None, *, default: Any = _MISSING, prefix: str = ""
               ) -> dict[str, Any]:
    """An object whose every value has the JSON type ``kind``."""
    value = expect(obj, key, dict, path, line, default=default, prefix=prefix)
    for name, item in (value or {}).items():
        if not _matches(item, kind):
            raise InputError(f"expected {_KIND_NAMES.get(kind, kind.__name__)}, got "
                             f"{json_type(item)}", path=path, line=line,
                             field=f"{prefix}{key}.{name}")
    return value


def expect_list(obj: dict[str, Any], key: str, kind: type, path: str | Path | None = None,
                line: int | None = None, *, prefix: str = "") -> list[Any]:
    """A list whose every item has the JSON type ``kind``."""
    value = expect(obj, key, list, path, line, prefix=prefix)
    for index, item in enumerate(value):
        if not _matches(item, kind):
            raise InputError(f"expected {_KIND_NAMES.get(kind, kind.__name__)}, got "
                             f"{json_type(item)}", path=path, line=line,
                             field=f"{prefix}{key}[{index}]")
    return value
