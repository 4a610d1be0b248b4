"""The offline home of prepared models, and the one protocol that prepares a model once.

Cache layout (``CALM_RAG_HOME`` defaults to ``~/.cache/calm_rag``)::

    $CALM_RAG_HOME/models/
      <name>/                  a prepared folder (a transformers or sentence-transformers model)
        calm_rag_source.json   the stamp: what it was made from; a mismatch means prepare again
      .<name>.lock             held while preparing, so parallel runs prepare once

:func:`prepare_once` is what every default model (generator and embedders) goes through: look,
lock, look again, build into a staging folder, stamp it, rename it into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calm_rag.io import atomic_dir, exclusive_lock

log = logging.getLogger(__name__)

HOME_ENV = "CALM_RAG_HOME"
STAMP_FILE = "calm_rag_source.json"


def home() -> Path:
    """The calm_rag cache root: ``$CALM_RAG_HOME`` or ``~/.cache/calm_rag``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "calm_rag").expanduser()


def models_dir() -> Path:
    """Where prepared models live."""
    return home() / "models"


def read_stamp(folder: Path) -> dict[str, Any] | None:
    """The stamp of a prepared folder, or None when there is none (or it is unreadable)."""
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(folder: Path, stamp: dict[str, Any]) -> None:
    """Record what ``folder`` was made from (written last, so a stamped folder is whole)."""
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def matches(stamp: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    """True when ``stamp`` holds every key of ``expected`` with the same value (extra keys,
    such as the time a conversion took, do not count)."""
    return stamp is not None and all(stamp.get(k) == v for k, v in expected.items())


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def prepare_once(target: Path, expected: dict[str, Any], build: Callable[[Path], object], *,
                 force: bool = False, label: str | None = None) -> Path:
    """Make ``target`` hold what ``build`` writes, once, and return it.

    ``expected`` is the stamp of an up-to-date folder (its source and converter version). The
    folder is reused when its stamp matches, unless ``force``. Otherwise, under an advisory lock
    (parallel runs wait rather than build twice), the stamp is checked again (another process
    may have finished while this one waited), ``build(staging)`` fills a fresh staging folder,
    the stamp is written into it and the folder is renamed into place: a reader sees the old
    folder or the whole new one, never a half-written one, and a failure leaves no folder.
    """
    if not force and matches(read_stamp(target), expected):
        return target
    with exclusive_lock(lock_path(target)):
        if not force and matches(read_stamp(target), expected):
            return target
        _remove_leftovers(target)
        log.info("preparing %s (once)", target)
        started = time.perf_counter()
        with atomic_dir(target) as staging:
            build(staging)
            write_stamp(staging, {**expected,
                                  "seconds": round(time.perf_counter() - started, 1)})
        log.info("prepared %s in %.1f s", label or target.name, time.perf_counter() - started)
    return target


def _remove_leftovers(target: Path) -> None:
    """Delete staging folders of preparations that were killed (run only under the lock)."""
    lock = lock_path(target)
    for path in target.parent.glob(f".{target.name}.*"):
        if path != lock and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
