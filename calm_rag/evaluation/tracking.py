"""The evaluation's figures, logged to the tracker(s) ``align.report_to`` names.

The trainer logs each step of a training; these writers log what the evaluation measured, one
scalar a figure of ``metrics.json``, tagged ``eval/<split>-<phase>/<setting>/<metric>[/<lang>]``
(``.../accuracy/mean``: the mean of the per-language accuracies, as the report shows it).
Every tracker ``align.report_to`` takes has a writer: TensorBoard's here, the others in
:mod:`calm_rag.evaluation.trackers`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calm_rag.evaluation.cells import Cell
from calm_rag.evaluation.tables import mean_accuracy
from calm_rag.evaluation.trackers import (
    Locator,
    TrackedRun,
    write_mlflow,
    write_trackio,
    write_wandb,
)
from calm_rag.runs import metric_rows
from calm_rag.training.tracker_runs import LOCAL_FIELDS

log = logging.getLogger(__name__)

TENSORBOARD_FOLDER = "tensorboard"
"""The run folder's TensorBoard log folder (``links.json``: ``evaluation.tensorboard``)."""


def eval_scalars(grid: dict[str, Any]) -> dict[str, float]:
    """Every figure of an evaluation grid by its tag, in the grid's order; a pair of
    languages' figures (the agreement tables) stay in the report, not the tracker."""
    scalars: dict[str, float] = {}
    for cell, setting, metric, lang, value, *_ in metric_rows(grid):
        if lang is None or "/" not in lang:
            scalars[tag(cell, setting, metric, lang)] = value
    for cell, data in grid["cells"].items():
        for setting, metrics in data["metrics"].items():
            mean = (mean_accuracy(metrics)
                    if "accuracy" in metrics and "languages" in metrics else None)
            if mean is not None:
                scalars[tag(cell, setting, "accuracy", "mean")] = mean
    return scalars


def tag(cell: str, setting: str, metric: str, lang: str | None = None) -> str:
    """``eval/heldout-after/zero-shot/accuracy/en``: one place per figure in the tracker."""
    name = f"eval/{Cell.parse(cell).file_stem}/{setting}/{metric}"
    return f"{name}/{lang}" if lang is not None else name


def write_tensorboard(run_folder: Path, scalars: dict[str, float], run: TrackedRun) -> str:
    """One event file in the run folder's ``tensorboard/``; the folder, relative to the run.

    Step 0 for every scalar: the tag already says which evaluation (cell, phase) it is."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # report_to: tensorboard is also allowed with tensorboardX alone
        from tensorboardX import SummaryWriter

    folder = run_folder / TENSORBOARD_FOLDER
    with SummaryWriter(log_dir=str(folder)) as writer:
        for name, value in scalars.items():
            writer.add_scalar(name, value, global_step=0)
    return TENSORBOARD_FOLDER


EVAL_WRITERS: dict[str, Callable[[Path, dict[str, float], TrackedRun], Locator]] = {
    "tensorboard": write_tensorboard, "wandb": write_wandb, "mlflow": write_mlflow,
    "trackio": write_trackio}
"""Tracker name (as ``align.report_to`` spells it) → its writer of the evaluation's figures."""


def log_evaluation(run_folder: Path, grid: dict[str, Any], trackers: list[str],
                   run: TrackedRun) -> dict[str, Locator]:
    """Write the grid's figures to each of ``trackers``; where each went, for ``links.json``.

    A tracker that fails now (a server gone since the config loaded) is named in the log and
    left out: the run folder, metrics.json with every figure, is still written."""
    wanted = [t for t in trackers if t != "none"]
    scalars = eval_scalars(grid) if wanted else {}
    written = {}
    for tracker in wanted:
        try:
            written[tracker] = EVAL_WRITERS[tracker](run_folder, scalars, run)
        except Exception as err:  # whatever the library raises: the run folder still comes
            log.warning("align.report_to: the evaluation's figures did not reach %s (%s: %s); "
                        "metrics.json has them", tracker, type(err).__name__, err)
    return written


def describe(locator: Locator, run_folder: Path) -> str:
    """Where a tracker keeps the figures, for the log: a folder, or the tracker's fields."""
    if isinstance(locator, str):
        return os.path.normpath(run_folder / locator)
    shown = {k: os.path.normpath(run_folder / v) if k in LOCAL_FIELDS else v
             for k, v in locator.items()}
    return ", ".join(f"{k} {v}" for k, v in shown.items())

