"""What the stage cache holds and which runs need it: ``calm-rag cache list`` and ``prune``.

A run's ``manifest.json`` names every stage entry it read or wrote (``stages``: stage and
key), so an entry is *referenced* while some run folder under the runs folder names it; prune
removes only entries no run references, finished ones (never a killed run's resumable work).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from calm_rag.pipeline.cache import StageCache

DAY = 24 * 3600


@dataclass(frozen=True)
class CacheEntry:
    """One ``<runs_dir>/.cache/<stage>/<key>`` folder."""

    stage: str
    key: str
    size: int
    """Bytes of its files (links not followed)."""
    modified: float
    """When it was finished (its ``DONE`` marker's time), else its folder's time."""
    done: bool
    """Finished; unfinished ones are a killed run's work, for a rerun to resume."""
    runs: tuple[str, ...]
    """The run folders (relative to the runs folder) whose manifest names it."""

    def age_days(self, now: float) -> float:
        return (now - self.modified) / DAY


def run_references(runs_dir: str | Path) -> dict[tuple[str, str], list[str]]:
    """(stage, key) → the run folders whose manifest names that entry."""
    runs_dir = Path(runs_dir)
    found: dict[tuple[str, str], list[str]] = {}
    for manifest in sorted(runs_dir.rglob("manifest.json")):
        relative = manifest.relative_to(runs_dir)
        if relative.parts[0].startswith("."):  # the cache, staging folders of killed runs
            continue
        try:
            stages = json.loads(manifest.read_text(encoding="utf-8")).get("stages") or []
        except (OSError, ValueError, AttributeError):
            continue  # not a run's manifest: references nothing
        for stage in stages:
            if isinstance(stage, dict) and "stage" in stage and "key" in stage:
                runs = found.setdefault((stage["stage"], stage["key"]), [])
                if str(relative.parent) not in runs:
                    runs.append(str(relative.parent))
    return found


def cache_entries(runs_dir: str | Path) -> list[CacheEntry]:
    """Every entry of ``<runs_dir>/.cache``, by stage and key, with who references it."""
    root = Path(runs_dir) / ".cache"
    if not root.is_dir():
        return []
    references = run_references(runs_dir)
    entries = []
    for stage in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for folder in sorted(p for p in stage.iterdir()
                             if p.is_dir() and not p.name.startswith(".")):
            key = folder.name.removesuffix(".partial")
            done = (folder / "DONE").is_file()
            stamp = folder / "DONE" if done else folder
            entries.append(CacheEntry(stage.name, folder.name, _size(folder),
                                      stamp.stat().st_mtime, done,
                                      tuple(references.get((stage.name, key), ()))))
    return entries


def prune_plan(entries: list[CacheEntry], *, older_than_days: float | None = None,
               max_bytes: int | None = None, now: float | None = None) -> list[CacheEntry]:
    """The entries to remove, oldest first: finished, referenced by no run, and older than
    ``older_than_days``; then more of them, oldest first, while the cache is over
    ``max_bytes``. Neither given: every unreferenced finished entry (empty ones stay)."""
    now = time.time() if now is None else now
    # An empty entry (a stamp, like the index check's) frees nothing and costs a recheck.
    free = sorted((e for e in entries if e.done and not e.runs and e.size),
                  key=lambda e: e.modified)
    if older_than_days is None and max_bytes is None:
        return free
    chosen = [e for e in free if older_than_days is not None
              and e.age_days(now) >= older_than_days]
    if max_bytes is not None:
        total = sum(e.size for e in entries) - sum(e.size for e in chosen)
        for entry in free:
            if total <= max_bytes:
                break
            if entry not in chosen:
                chosen.append(entry)
                total -= entry.size
    return sorted(chosen, key=lambda e: e.modified)


def prune(runs_dir: str | Path, plan: list[CacheEntry]) -> list[CacheEntry]:
    """Remove the planned entries; return those removed (one a run holds now stays)."""
    cache = StageCache(Path(runs_dir) / ".cache")
    return [entry for entry in plan if cache.remove(entry.stage, entry.key)]


def _size(folder: Path) -> int:
    total = 0
    for here, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(here, name)).st_size
            except OSError:  # removed meanwhile
                continue
    return total
