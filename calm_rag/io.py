"""Reading JSON/JSONL with line numbers, and writing files and folders atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    seen = False
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"malformed JSON: {err.msg} at column {err.colno}",
                                 path=path, line=number) from None
            if not isinstance(obj, dict):
                raise InputError("expected a JSON object on each line", path=path, line=number)
            seen = True
            yield number, obj
    if not seen:
        raise InputError("the file is empty", path=path, hint="expected one JSON object a line")


def read_json(path: str | Path) -> Any:
    """Load a whole JSON file; a syntax error names its line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError("the file is empty", path=path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON: {err.msg} at column {err.colno}",
                         path=path, line=err.lineno) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path: str | Path, directory: bool) -> None:
    # mkstemp/mkdtemp make private (0600/0700) entries; artifacts get the usual umask mode.
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _usual_mode(tmp, directory=False)
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object a line, atomically; return the number of rows."""
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | Path, obj: Any) -> None:
    """Write indented JSON atomically (readable by people and LLaMA-Factory alike)."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder beside ``path`` and swap it in only when the block succeeds.

    A failure leaves the previous folder (if any) untouched and no partial one behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
    _usual_mode(staging, directory=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json_array(path: str | Path) -> list[tuple[int, Any]]:
    """Load a JSON array file as ``(line_number, item)`` pairs, so errors can name the line."""
    path = Path(path)
    data = read_json(path)  # validates syntax and gives a good message first
    if not isinstance(data, list):
        raise InputError("expected a JSON array of objects", path=path, line=1)
    if not data:
        raise InputError("the file holds an empty array", path=path, line=1)
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    lines, offset = [], text.index("[") + 1
    line, counted = 1, 0
    for _ in data:
        while text[offset] in " \t\r\n,":
            offset += 1
        line += text.count("\n", counted, offset)  # count only the new stretch: linear time
        counted = offset
        lines.append(line)
        _, offset = decoder.raw_decode(text, offset)
    return list(zip(lines, data, strict=True))


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[None]:
    """Hold an advisory lock so parallel runs do one-time work once (a no-op where fcntl is
    missing; atomic_dir still keeps half-written folders invisible)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
