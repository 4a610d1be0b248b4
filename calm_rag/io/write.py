"""Writing files and our own folders atomically, and advisory locks.

These replace *our own* artifacts (a cache entry, an index, a trained model). A user's
``--out`` folder is written by :mod:`calm_rag.io.outputs`, which adds files beside the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Our temp names: ``.<name>.<random>.tmp`` files, ``.<name>.<random>.new`` folders and
# ``.<name>.old-<pid>`` folders moved aside; stale ones are swept (see sweep_stale).
STAGING_SUFFIXES = (".tmp", ".new", ".partial")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_mode(path: str | Path, directory: bool) -> None:
    """Give ``path`` the mode the umask gives new files (folders): mkstemp/mkdtemp make
    private (0600/0700) entries, and artifacts are meant to be shared like any file."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds.

    Text is UTF-8; a lone surrogate (not a character, so not encodable) is written as ``?``
    rather than failing the write halfway.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        usual_mode(tmp, directory=False)
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding="utf-8" if text else None,
                       errors="replace" if text else None) as handle:
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
    """Build one of *our* folders beside ``path`` and swap it in only when the block succeeds.

    A failure leaves the previous folder (if any) untouched and no partial one behind; if the
    final swap fails, the previous folder is put back. Never use it on a user's folder: it
    replaces ``path`` whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
    usual_mode(staging, directory=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    try:
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
            os.replace(path, old / "old")
        os.replace(staging, path)
    except BaseException:
        if old is not None and (old / "old").exists() and not path.exists():
            os.replace(old / "old", path)  # the previous state, restored
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[None]:
    """Hold an advisory lock so parallel runs do one-time work once (atomic_dir also keeps
    half-written folders invisible)."""
    from filelock import FileLock

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        yield
