"""The evaluation's figures to W&B, MLflow and Trackio, where the training's callback logs.

Each writer opens its own tracker run, ``<experiment>-evaluation``, where transformers'
``WandbCallback``, ``MLflowCallback`` or ``TrackioCallback`` put the training (the same
project, experiment, store and environment variables), logs every figure at step 0 (the tag
already says which evaluation it is), closes the run and says where it is, for ``links.json``:
a local folder relative to the run folder, or the tracker's own address. Each library is
imported only when its tracker is asked for.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm_rag.training.tracker_runs import mlflow_locator, trackio_locator, wandb_locator
from calm_rag.training.trackers import trackio_space

log = logging.getLogger(__name__)

Locator = str | dict[str, str]
"""Where a tracker keeps the figures: a path relative to the run folder, or its fields."""

DEFAULT_PROJECT = "huggingface"
"""The project transformers logs to when none is set (``WANDB_PROJECT``, Trackio's ``project``)."""


@dataclass(frozen=True)
class TrackedRun:
    """The calm_rag run the figures come from: its name, and ``align.trainer`` (where
    TRL's ``project`` and ``trackio_space_id`` are set for the training)."""

    name: str
    trainer: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tracker_name(self) -> str:
        return f"{self.name}-evaluation"


def write_wandb(run_folder: Path, scalars: dict[str, float], run: TrackedRun) -> Locator:
    """A W&B run in ``WANDB_PROJECT`` (as ``WandbCallback``), beside any run still open
    (the training's, in this process); ``WANDB_MODE``/``WANDB_DIR`` as wandb reads them.
    A fresh id: ``WANDB_RUN_ID`` names the training's run, which refuses a second writer."""
    import wandb
    from wandb.sdk.lib.runid import generate_id

    tracked = wandb.init(project=os.getenv("WANDB_PROJECT", DEFAULT_PROJECT),
                         name=run.tracker_name, job_type="evaluation", reinit="create_new",
                         id=generate_id())
    try:
        tracked.log(scalars, step=0)
        where = wandb_locator(tracked, run_folder)
    finally:
        tracked.finish()
    return where


def write_mlflow(run_folder: Path, scalars: dict[str, float], run: TrackedRun) -> Locator:
    """An MLflow run in ``MLFLOW_EXPERIMENT_NAME`` (as ``MLflowCallback``: it sets that
    experiment, creating it if need be) of the store ``MLFLOW_TRACKING_URI`` names; nested
    in a run left open, as the callback's would be. With ``MLFLOW_RUN_ID`` the figures go
    into that run, as the training's steps do, and its name stays the user's."""
    import mlflow

    if experiment := os.getenv("MLFLOW_EXPERIMENT_NAME"):
        mlflow.set_experiment(experiment)
    own = not os.getenv("MLFLOW_RUN_ID")  # mlflow.start_run resumes that run by itself
    with mlflow.start_run(run_name=run.tracker_name if own else None,
                          nested=mlflow.active_run() is not None,
                          tags={"calm_rag.stage": "evaluation"} if own else None) as active:
        mlflow.log_metrics(scalars, step=0)
    return mlflow_locator(active.info)


def write_trackio(run_folder: Path, scalars: dict[str, float], run: TrackedRun) -> Locator:
    """A Trackio run in the training's project and Space (``align.trainer``'s ``project``
    and ``trackio_space_id``, else ``TRACKIO_SPACE_ID``), or its local store (``TRACKIO_DIR``).
    Trackio prints its dashboard instructions: kept for ``-v``."""
    import trackio

    project = run.trainer.get("project") or DEFAULT_PROJECT
    space = trackio_space(run.trainer)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tracked = trackio.init(project=project, name=run.tracker_name, space_id=space,
                               auto_log_cpu=False, auto_log_gpu=False)
        try:
            tracked.log(scalars, step=0)
        finally:
            trackio.finish()  # the module's: it also forgets the run (else finished at exit)
    log.debug("trackio: %s", printed.getvalue().strip())
    return trackio_locator(tracked, space, run_folder)
