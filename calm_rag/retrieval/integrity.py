"""Whether an index's files are still the ones last checked in full, without reading them.

Hashing every file of an index on each open is minutes for a large one (MedCorp's is 27 GB);
checking sizes alone serves a file whose bytes changed in place. So every full check (the build,
``calm-rag index verify``, or an open that found no valid stamp) leaves a *stamp*: each file's
size, mtime, inode and ctime as they were when it was hashed, and the manifest's own SHA-256. An
open whose files all still show those figures skips the hashing; any difference means hashing
again. The ctime is what makes this hold: any write changes it, and unlike the mtime (``touch
-r``) nobody can set it back.

The stamp lives at ``<index dir>/.cache/<name>.verified.json``, beside the build's other
bookkeeping (its lock, its embedding shards), not inside the index folder: the folder holds the
manifest and exactly the files it lists, and the stamp is no part of what the manifest
checksums. Where it cannot be written (an index directory shared read-only), every open hashes
in full and the log says once how to stop that: run ``calm-rag index verify`` as a user who can
write there, after which every reader trusts the stamp.

A stamp is only ever a reason to skip work: one that cannot be read, lists other files than
the manifest, was made for another manifest or does not match a file means a full check.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import read_json, write_json
from calm_rag.retrieval import manifest as mf
from calm_rag.runtime.provenance import file_digest

log = logging.getLogger(__name__)

STAMP_VERSION = 1
STAMP_DIR = ".cache"
"""Beside the index folders: the build's own bookkeeping folder (``build.CACHE_DIR``)."""
RACY_NS = 2_000_000_000
"""A file changed this recently (or later) when it is stamped is not stamped: a write in the
same tick of the filesystem's clock as the stamp's stat would leave every figure unchanged
(timestamps are as coarse as 1-2 s on some filesystems)."""

_WARNED: set[Path] = set()


def stamp_path(folder: Path) -> Path:
    """Where the stamp of the index in ``folder`` is kept."""
    return folder.parent / STAMP_DIR / f"{folder.name}.verified.json"


def check(folder: Path, manifest: dict[str, Any], *, full: bool = False) -> bool:
    """The files of an index about to be served are those its manifest lists: sizes always,
    SHA-256 unless a valid stamp says they have not changed since they were last hashed (or
    always, with ``full``). Returns whether the files were hashed."""
    mf.verify_files(folder, manifest, checksums=False)  # a missing or cut file, named at once
    if not full and stamp_matches(folder, manifest):
        return False
    verify(folder, manifest)
    return True


def verify(folder: Path, manifest: dict[str, Any]) -> str | None:
    """Hash every listed file against the manifest (an InputError names the first that
    differs), then record the stamp. Returns None once recorded, else why it was not."""
    states: dict[str, dict[str, int]] = {}
    for name in manifest["files"]:
        path = folder / name
        seen = time.time_ns()
        before = _state(path) if path.is_file() else None
        mf.check_file(folder, manifest, name, checksum=True)
        # A file written while it was hashed, or just before, is left out: its stamp would
        # vouch for bytes that were not the ones hashed.
        if before is not None and before == _state(path) and not _racy(before, seen):
            states[name] = before
    if len(states) != len(manifest["files"]):
        return _not_stamped(folder, sorted(set(manifest["files"]) - set(states)))
    return _write_stamp(folder, manifest, states)


def record(folder: Path, manifest: dict[str, Any]) -> str | None:
    """Stamp files whose checksums were just computed by the caller (the build, which hashed
    them in its private staging folder for the manifest) without hashing them again."""
    seen = time.time_ns()
    states = {name: _state(folder / name) for name in manifest["files"]}
    recent = sorted(name for name, state in states.items() if _racy(state, seen))
    if recent:
        return _not_stamped(folder, recent)
    return _write_stamp(folder, manifest, states)


def _not_stamped(folder: Path, names: list[str]) -> str:
    reason = (f"{', '.join(names)} changed in the last {RACY_NS / 1e9:g} s (or while being "
              "read), too recently to be sure no change goes unseen")
    log.info("%s: not recorded as verified: %s; the next open hashes it again", folder, reason)
    return reason


def stamp_matches(folder: Path, manifest: dict[str, Any]) -> bool:
    """Whether the stamp vouches for every file the manifest lists, as they are now."""
    path = stamp_path(folder)
    if not path.is_file():
        return False
    try:
        stamp = read_json(path)
    except InputError as err:
        log.info("ignoring an unreadable stamp (%s): checking every file", err)
        return False
    if not isinstance(stamp, dict) or stamp.get("stamp") != STAMP_VERSION:
        return False
    files = stamp.get("files")
    if stamp.get("manifest_sha256") != _manifest_digest(folder) or not isinstance(files, dict) \
            or set(files) != set(manifest["files"]):
        return False
    return all(files[name] == _state(folder / name) for name in manifest["files"])


def _write_stamp(folder: Path, manifest: dict[str, Any],
                 states: dict[str, dict[str, int]]) -> str | None:
    stamp = {"stamp": STAMP_VERSION, "folder": str(folder.resolve()),
             "manifest_sha256": _manifest_digest(folder),
             "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "files": states}
    path = stamp_path(folder)
    try:
        write_json(path, stamp)
    except OSError as err:
        _warn_unwritable(folder, path, manifest, err)
        return f"{path} cannot be written ({err.strerror or err})"
    return None


def _warn_unwritable(folder: Path, path: Path, manifest: dict[str, Any], err: OSError) -> None:
    """Once a folder a process: without a stamp every open hashes the whole index."""
    if folder in _WARNED:
        return
    _WARNED.add(folder)
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    log.warning("cannot record that %s was verified (%s: %s), so each open reads its %d bytes "
                "again; to avoid it, run `calm-rag index verify %s` once as a user who can "
                "write %s", folder, path, err.strerror or err, total, folder, path.parent)


def _state(path: Path) -> dict[str, int]:
    stat = os.stat(path)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino,
            "ctime_ns": stat.st_ctime_ns}


def _racy(state: dict[str, int], seen: int) -> bool:
    """Changed within :data:`RACY_NS` of ``seen``, the clock when the state was read."""
    return state["ctime_ns"] >= seen - RACY_NS


def _manifest_digest(folder: Path) -> str:
    return file_digest(folder / mf.MANIFEST, remember=False)
