"""One protocol for every cached stage: key, has, read back; else compute, save whole, record.

A stage is a name (its folder in the cache and its row in :data:`STAGE_VERSIONS`), how its
result is saved into a folder and read back from one, and whether it computes in place. Every
stage of the pipeline runs through :func:`run_cached`, so what a stage caches, how it resumes
and how its reuse is logged is written once:

- the key hashes the stage's name, its version and what the caller names as its inputs;
- a key already in the cache is read back (after waiting for a run computing it now);
- otherwise the key is claimed, the result computed and saved into a staging folder that
  becomes the stage's folder only when whole. ``compute`` gets a work folder that survives a
  crash (a resumable stage keeps finished pieces there) and is removed once the result is
  saved. An ``in_place`` stage (training, whose checkpoints must be where a resume finds them)
  computes into the stage's folder itself, marked done at the end.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from calm_rag.pipeline.cache import STAGE_VERSIONS
from calm_rag.runtime.provenance import content_key

if TYPE_CHECKING:
    from calm_rag.pipeline.stages.context import RunContext

T = TypeVar("T")


@dataclass(frozen=True)
class Stage(Generic[T]):
    """A cached stage: where it lives, and how its result is saved and read back."""

    name: str
    save: Callable[[Path, T], None]
    load: Callable[[Path], T]
    in_place: bool = False
    """``compute`` writes into the stage's own folder (kept across a crash, to resume from);
    ``save`` then only adds what is left."""

    def __post_init__(self) -> None:
        if self.name not in STAGE_VERSIONS:
            raise ValueError(f"stage {self.name!r} has no entry in STAGE_VERSIONS")

    def key(self, *inputs: Any) -> str:
        """The content key of this stage's output for ``inputs`` (its version included)."""
        return content_key(self.name, STAGE_VERSIONS[self.name], *inputs)


def run_cached(ctx: RunContext, stage: Stage[T], label: str, key: str,
               compute: Callable[[Path], T]) -> T:
    """``stage``'s result for ``key``: read from the cache, or computed, saved and recorded.

    ``compute(folder)`` gets the work folder (or, in place, the stage's folder).
    """
    started, cache = time.perf_counter(), ctx.cache
    forcing = cache.forcing(stage.name, key)
    if forcing or not cache.has(stage.name, key):
        with cache.claim(stage.name, key):
            if forcing or not cache.has(stage.name, key):  # not finished meanwhile
                resumed = _resumable(cache.folder(stage.name, key), stage, forcing)
                result = _compute(ctx, stage, key, compute, replace=forcing)
                cache.forced.add((stage.name, key))
                ctx.record(stage.name, label, key, False, time.perf_counter() - started)
                if forcing:
                    ctx.stages[-1]["forced"] = True
                if resumed:  # a killed run's finished pieces, read back (the stage logs how)
                    ctx.stages[-1]["resumed"] = resumed
                return result
    result = stage.load(cache.folder(stage.name, key))
    ctx.record(stage.name, label, key, True, time.perf_counter() - started)
    return result


def _resumable(folder: Path, stage: Stage[Any], forcing: bool) -> int:
    """Files a killed run left for this key to resume from (none when forced: dropped)."""
    work = folder if stage.in_place else folder.with_name(f"{folder.name}.partial")
    if forcing or not work.is_dir():
        return 0
    return sum(1 for p in work.rglob("*") if p.is_file())


def _compute(ctx: RunContext, stage: Stage[T], key: str, compute: Callable[[Path], T],
             replace: bool = False) -> T:
    """Compute and save; ``replace`` (forced) starts from nothing and replaces the entry."""
    cache = ctx.cache
    if stage.in_place:
        folder = cache.folder(stage.name, key)
        if replace:  # no DONE first, so no reader takes the half-removed folder for whole
            (folder / "DONE").unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        result = compute(folder)
        stage.save(folder, result)
        (folder / "DONE").write_text("", encoding="utf-8")
        return result
    work = cache.folder(stage.name, f"{key}.partial")  # swept once its claim is gone
    if replace:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = compute(work)
    except BaseException:
        _drop_if_empty(work)
        raise
    with cache.writing(stage.name, key, replace=replace) as staging:
        stage.save(staging, result)
    shutil.rmtree(work, ignore_errors=True)
    return result


def _drop_if_empty(work: Path) -> None:
    """A work folder a failed compute left empty holds nothing to resume from: remove it
    rather than leave an empty ``.partial`` entry for the next sweep."""
    try:
        work.rmdir()  # only succeeds when empty: resumable work is kept
    except OSError:
        pass
