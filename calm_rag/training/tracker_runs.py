"""Where a training's W&B, MLflow and Trackio runs went: ``trackers.json`` in its folder.

transformers' ``WandbCallback``, ``MLflowCallback`` and ``TrackioCallback`` open their run
when the training begins and keep no record of it that outlives the training. The recorder
(added after them, so called after them) asks each library for the run it has open then, and
rank 0 writes what it found beside the adapter, so that a training read from the cache still
says where its steps went (``links.json``: rounds). A locator has the shape the evaluation's
writers give ``links.json``; its folders are relative to the folder it is written for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calm_rag.io import read_json, write_json

log = logging.getLogger(__name__)

TRACKERS_FILE = "trackers.json"
"""A training folder's record of its tracker runs: tracker name → locator."""

OFFLINE = ("offline", "dryrun")
"""W&B modes that keep the run in a local folder."""

LOCAL_FIELDS = ("dir", "store")
"""A locator's fields that are paths relative to the folder it was written for."""


def relative(place: str | Path, folder: Path) -> str:
    """``place`` from ``folder`` (a staging sibling of the published one: the path holds)."""
    return os.path.relpath(Path(place).resolve(), folder.resolve())


def wandb_locator(run: Any, folder: Path) -> dict[str, str]:
    """A W&B run: project, id, name, mode, and its offline folder (``wandb sync <dir>``
    uploads it) or its URL."""
    where = {"project": str(run.project), "run_id": run.id}
    if run.name:  # an offline run without one is named when it is synced
        where["name"] = str(run.name)
    where["mode"] = run.settings.mode
    if run.settings.mode in OFFLINE:
        where["dir"] = relative(run.settings.sync_dir, folder)
    elif run.url:
        where["url"] = run.url
    return where


def mlflow_locator(info: Any) -> dict[str, str]:
    """An MLflow run (its ``RunInfo``) in the store MLflow is pointed at."""
    import mlflow

    return {"tracking_uri": mlflow.get_tracking_uri(), "experiment_id": info.experiment_id,
            "run_id": info.run_id, "name": str(info.run_name)}


def trackio_locator(run: Any, space: str | None, folder: Path) -> dict[str, str]:
    """A Trackio run: its project, id and name, and its Space or its local store."""
    where = {"project": run.project, "run_id": run.id, "name": run.name}
    if space:
        return where | {"space_id": space}
    from trackio.sqlite_storage import SQLiteStorage

    return where | {"store": relative(SQLiteStorage.get_project_db_path(run.project), folder)}


def _open_wandb(folder: Path) -> dict[str, str] | None:
    import wandb

    return wandb_locator(wandb.run, folder) if wandb.run is not None else None


def _open_mlflow(folder: Path) -> dict[str, str] | None:
    import mlflow

    active = mlflow.active_run()
    return mlflow_locator(active.info) if active is not None else None


def _open_trackio(folder: Path) -> dict[str, str] | None:
    # The run TrackioCallback opened: trackio.init's return value, which the callback drops;
    # its context variables are where transformers itself reads the Space back.
    from trackio import context_vars

    run = context_vars.current_run.get()
    return (trackio_locator(run, context_vars.current_space_id.get(), folder)
            if run is not None else None)


OPEN_RUN: dict[str, Callable[[Path], dict[str, str] | None]] = {
    "wandb": _open_wandb, "mlflow": _open_mlflow, "trackio": _open_trackio}
"""Tracker name → the locator of the run its library has open now (None: none is)."""


def run_recorder(trackers: list[str], folder: Path, found: dict[str, dict[str, str]]) -> Any:
    """A trainer callback that puts into ``found``, on rank 0 when the training begins (the
    trackers' callbacks have opened their runs), each tracker's run, relative to ``folder``."""
    from transformers import TrainerCallback

    class RunRecorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return  # the trackers log from rank 0 only
            for tracker in trackers:
                if tracker in OPEN_RUN and (where := OPEN_RUN[tracker](folder)) is not None:
                    found[tracker] = where

    return RunRecorder()


def write_tracker_runs(folder: Path, trackers: list[str], found: dict[str, dict[str, str]],
                       resumed_from: str | None = None) -> None:
    """``trackers.json`` with the runs found, when a tracker that has runs was asked for; a
    tracker whose run was not found is left out and named in the log, never guessed.

    A training resumed from a checkpoint records the runs of the process that finished it,
    marked ``resumed_from``: the killed process's steps may have gone to other runs."""
    wanted = [t for t in trackers if t in OPEN_RUN]
    if not wanted:
        return
    for tracker in wanted:
        if tracker not in found:
            log.warning("align.report_to: %s had no run open when the training began; "
                        "%s leaves it out", tracker, TRACKERS_FILE)
    mark = {"resumed_from": resumed_from} if resumed_from else {}
    write_json(folder / TRACKERS_FILE, {t: found[t] | mark for t in wanted if t in found})


def read_tracker_runs(folder: Path) -> dict[str, dict[str, str]]:
    """The tracker runs a training folder records (none: trained without these trackers, or
    by a calm_rag that did not record them)."""
    path = folder / TRACKERS_FILE
    return read_json(path) if path.is_file() else {}


def rebased(locator: dict[str, str], written_for: Path, folder: Path) -> dict[str, str]:
    """A locator written for ``written_for`` with its folders relative to ``folder``."""
    return {k: relative(written_for / v, folder) if k in LOCAL_FIELDS else v
            for k, v in locator.items()}


def run_name(tracker: str, locator: dict[str, str]) -> str:
    """A tracker run in a few words, for the log: ``wandb run calm/1a2b`` (project or
    experiment, then run id)."""
    parts = [locator[k] for k in ("project", "experiment_id", "run_id") if k in locator]
    return f"{tracker} run {'/'.join(parts)}"
