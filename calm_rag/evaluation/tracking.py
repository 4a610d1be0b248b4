"""The evaluation's figures, logged to the tracker(s) ``align.report_to`` names.

The trainer logs each step of a training; these writers log what the evaluation measured, one
scalar a figure of ``metrics.json``, tagged ``eval/<split>-<phase>/<setting>/<metric>[/<lang>]``
(``.../accuracy/mean``: the mean of the per-language accuracies, as the report shows it). A
tracker without a writer here gets the training's logs only, and the run says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calm_rag.evaluation.cells import Cell
from calm_rag.evaluation.tables import mean_accuracy
from calm_rag.runs import metric_rows

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


def write_tensorboard(run_folder: Path, scalars: dict[str, float]) -> str:
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


EVAL_WRITERS: dict[str, Callable[[Path, dict[str, float]], str]] = {
    "tensorboard": write_tensorboard}
"""Tracker name (as ``align.report_to`` spells it) → its writer of the evaluation's figures."""


def log_evaluation(run_folder: Path, grid: dict[str, Any], trackers: list[str]
                   ) -> dict[str, str]:
    """Write the grid's figures to each of ``trackers`` that has a writer; where each went
    (relative to the run folder), for ``links.json``."""
    wanted = [t for t in trackers if t != "none"]
    if not wanted:
        return {}
    scalars = eval_scalars(grid)
    written = {t: EVAL_WRITERS[t](run_folder, scalars) for t in wanted if t in EVAL_WRITERS}
    if skipped := [t for t in wanted if t not in EVAL_WRITERS]:
        log.info("align.report_to: %s got the training's logs only; the evaluation's figures "
                 "go to %s", ", ".join(skipped),
                 ", ".join(EVAL_WRITERS) + " (when named there) and metrics.json")
    return written

