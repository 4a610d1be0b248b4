"""The stage cache: each stage's output lives under a key made of its inputs' content.

A stage's key hashes everything that can change its output (model weights, prompts, sampling
parameters, seed, index manifest, the stage's own config and code version), so a rerun of a
finished experiment finds every output and recomputes nothing, while any change recomputes
exactly the stages it reaches.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from calm_rag.errors import InputError
from calm_rag.io import atomic_dir

log = logging.getLogger(__name__)

STAGE_VERSIONS = {
    "index-check": 1,
    "retrieve": 3,  # 3: every hit kept with its id, language, rank and score
    "sample": 1,
    "answers": 1,
    "regenerate": 1,
    "align": 2,
    "option_scores": 2,  # 2: the aligned model's adapter applied, on the sampler's device
}
"""Every stage's version, in one table: bump a stage's when its code changes what it writes
for the same inputs, so no cache entry computed the old way is served again."""
FORCEABLE = tuple(name for name in STAGE_VERSIONS if name != "index-check")
"""The stages ``calm-rag run --force`` recomputes (the index check is not one: ``calm-rag
index build --force`` rebuilds an index)."""


STALE_SECONDS = 24 * 3600
"""Staging entries whose owner cannot be told untouched this long belong to killed runs and
are swept (and a killed run's resumable ``.partial`` work)."""
_STAGING = re.compile(r"(?:\..+\.(?:new|tmp)|.+\.partial)")
_HELD: dict[Path, FileLock] = {}
"""Stage-key locks this process holds (flock is per open file, so a second open would block
on our own lock)."""


@dataclass
class StageCache:
    """Folders ``<root>/<stage>/<key>/``, each written whole or not at all.

    Runs sharing a cache coordinate through a lock per stage key: a run computing a key holds
    it, and another run asking for that key waits and then reads the result instead of
    computing it again or reading half of it.
    """

    root: Path
    force: frozenset[str] = frozenset()
    """Stages recomputed even when cached (``--force``), each key once per run: the new
    result replaces the entry whole."""
    forced: set[tuple[str, str]] = field(default_factory=set)
    """The (stage, key) entries this run has recomputed under ``force``."""

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        unknown = sorted(set(self.force) - set(FORCEABLE))
        if unknown:
            raise InputError(f"no stage named {', '.join(unknown)}", field="--force",
                             hint=f"name some of {', '.join(FORCEABLE)}, or all")
        sweep_stale(self.root)

    def forcing(self, stage: str, key: str) -> bool:
        """Whether ``stage`` must be recomputed for ``key`` although it may be cached."""
        return stage in self.force and (stage, key) not in self.forced

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        """Whether the stage's output is cached, after waiting for a run computing it now."""
        if self._done(stage, key):
            return True
        lock = self._lock_path(stage, key)
        if lock in _HELD or not lock.exists():
            return False
        with _flock(lock, wait=False) as free:
            if free:
                return self._done(stage, key)
        log.warning("waiting for another run computing %s %s (lock %s)", stage, key, lock)
        with _flock(lock, wait=True):
            return self._done(stage, key)

    def _done(self, stage: str, key: str) -> bool:
        return (self.folder(stage, key) / "DONE").is_file()

    def _lock_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f".{key}.lock"

    @contextmanager
    def writing(self, stage: str, key: str, replace: bool = False) -> Iterator[Path]:
        """A staging folder that becomes the stage's output only when the block succeeds.

        If another run finished the same key meanwhile, its (identical) output is kept and
        what the block wrote is dropped, unless ``replace`` (a forced stage: the new output
        takes the entry's place in one rename). A stage whose record files are empty is
        refused.
        """
        target = self.folder(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.claim(stage, key):
            if self._done(stage, key) and not replace:
                with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{key}.",
                                                 suffix=".tmp") as scratch:
                    yield Path(scratch)
                return
            with atomic_dir(target) as staging:
                yield staging
                _check_complete(stage, staging)
                (staging / "DONE").write_text("", encoding="utf-8")

    @contextmanager
    def claim(self, stage: str, key: str) -> Iterator[None]:
        """Hold the key's lock for the block (waiting for a run that holds it); re-check
        :meth:`has` inside before computing."""
        lock = self._lock_path(stage, key)
        if lock in _HELD:  # the work folder's claim already holds it
            yield
            return
        _HELD[lock] = _acquire(lock)  # registered, so has() inside does not wait on itself
        try:
            yield
        finally:
            _HELD.pop(lock).release()

    def work_folder(self, stage: str, key: str) -> Path:
        """Where a long stage keeps finished pieces (shards) until it completes; kept across a
        crash so a rerun resumes, removed once the stage's output is written.

        It claims the key: another run's :meth:`has` waits until :meth:`drop_work`.
        """
        lock = self._lock_path(stage, key)
        if lock not in _HELD:
            _HELD[lock] = _acquire(lock)
        folder = self.root / stage / f"{key}.partial"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove(self, stage: str, key: str) -> bool:
        """Remove a finished entry (``calm-rag cache prune``); False, leaving it, while a run
        holds its key (computing or replacing it)."""
        folder = self.folder(stage, key)
        with _flock(self._lock_path(stage, key), wait=False) as free:
            if not free:
                return False
            # DONE first: a run arriving now computes again rather than read half a folder.
            (folder / "DONE").unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
        return True

    def drop_work(self, stage: str, key: str) -> None:
        shutil.rmtree(self.root / stage / f"{key}.partial", ignore_errors=True)
        held = _HELD.pop(self._lock_path(stage, key), None)
        if held is not None:
            held.release()


def _check_complete(stage: str, staging: Path) -> None:
    """An empty record file marked done would make every rerun read nothing; refuse it."""
    empty = [p.name for p in staging.glob("*.jsonl") if p.stat().st_size == 0]
    if empty:
        raise InputError(f"stage {stage!r} produced no records ({', '.join(empty)}); "
                         "nothing was cached", hint="check the questions and shard_questions")


def _acquire(lock: Path) -> FileLock:
    """``lock``, held until released (waiting while another run holds it). Not thread-local:
    a stage may release a key in another thread than the one that claimed it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock, thread_local=False)
    held.acquire()
    return held


@contextmanager
def _flock(lock: Path, wait: bool) -> Iterator[bool]:
    """Hold ``lock`` for the block; with ``wait=False`` yield False at once if it is taken."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock)
    try:
        held.acquire(timeout=-1 if wait else 0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        held.release()


def sweep_stale(root: Path, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove staging entries (``.new``, ``.tmp``, ``.partial``) of dead runs from every
    stage of the cache (see :func:`sweep_folder`)."""
    if not root.is_dir():
        return []
    return [gone for stage in root.iterdir() if stage.is_dir()
            for gone in sweep_folder(stage, max_age)]


def sweep_folder(folder: Path, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the staging entries directly inside ``folder`` whose owner is dead; return them.

    An owner is known dead, whatever the entry's age, when the entry's stage-key lock is free
    (the kernel frees a killed run's lock) or when the entry's name carries the pid of its
    owner on this machine (:func:`owner_tag`) and no such process exists. A ``.partial`` work
    folder holding finished shards is a killed run's progress, which a rerun resumes from: it
    goes only once its lock is free and it is ``max_age`` old, like an entry of unknown owner.
    """
    removed, now = [], time.time()
    for entry in folder.iterdir():
        if not _STAGING.fullmatch(entry.name):
            continue
        lock = _key_lock(entry)
        if lock is not None:  # the key's lock says whether it is owned
            with _flock(lock, wait=False) as free:
                if free and (_nothing_to_resume(entry)
                             or now - _newest_mtime(entry) >= max_age):
                    _remove(entry)
                    removed.append(entry)
            continue
        if _owner_gone(entry.name) or now - _newest_mtime(entry) >= max_age:
            _remove(entry)
            removed.append(entry)
    return removed


def owner_tag() -> str:
    """``pid-<pid>-<machine>`` for a staging entry's name, so a sweep can tell whether its
    owner still runs. The machine is the host name and the pid namespace (two containers on
    one host may see different processes under one pid)."""
    return f"pid-{os.getpid()}-{_machine()}"


def _machine() -> str:
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]
    return f"{host}_{namespace}"


_OWNED = re.compile(r".*\.pid-(\d+)-([A-Za-z0-9]*_\d*)\..*")


def _owner_gone(name: str) -> bool:
    """Whether ``name`` carries the owner tag of a process of this machine that has ended
    (another machine's process, or a pid reused: not known gone)."""
    tagged = _OWNED.fullmatch(name)
    if tagged is None or tagged.group(2) != _machine():
        return False
    try:
        os.kill(int(tagged.group(1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's process is alive
        return False
    return False


def _key_lock(entry: Path) -> Path | None:
    """The stage-key lock a staging entry was made under (``.<key>.<random>.new``,
    ``.<key>.<random>.tmp``, ``<key>.partial``), if that lock exists: the stage cache makes
    its staging entries only while holding it."""
    if entry.name.endswith(".partial"):
        key = entry.name[:-len(".partial")]
    else:
        key = entry.name[1:].rsplit(".", 2)[0]
    lock = entry.parent / f".{key}.lock"
    return lock if key and lock.is_file() else None


def _nothing_to_resume(entry: Path) -> bool:
    """A staging ``.new``/``.tmp`` is never resumed; a ``.partial`` only if it holds files."""
    if not entry.name.endswith(".partial") or not entry.is_dir() or entry.is_symlink():
        return True
    return not any(p.is_file() for p in entry.rglob("*"))


def _newest_mtime(path: Path) -> float:
    try:
        times = [path.lstat().st_mtime]
        if path.is_dir() and not path.is_symlink():
            times += [p.lstat().st_mtime for p in path.rglob("*")]
        return max(times)
    except OSError:  # vanished meanwhile: another run is busy with it
        return time.time()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
