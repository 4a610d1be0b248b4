"""``align.report_to`` also gets the evaluation's figures, and a training read from the cache
still links its TensorBoard events into the run (or says it has none, and how to get them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from calm_rag.evaluation.tracking import eval_scalars, log_evaluation, tag
from calm_rag.pipeline.stages.align import cached_tracking
from calm_rag.runs import metric_rows
from calm_rag.training.common import TrainResult
from tests.helpers import experiment, latest_run, run_cli, write_experiment

GRID = {"cells": {"heldout/after": {"metrics": {"zero-shot": {
    "n_questions": 2, "languages": ["en", "fr"],
    "accuracy": {"en": {"value": 0.5, "ci95": [0.0, 1.0], "n": 2},
                 "fr": {"value": 1.0, "ci95": [1.0, 1.0], "n": 2}},
    "extraction_rate": {"en": 1.0, "fr": 0.5},
    "consistency": {"value": 0.25, "ci95": [0.0, 0.5], "n": 2},
    "agreement": {"en": {"en": 1.0, "fr": 0.5}, "fr": {"en": 0.5, "fr": 1.0}},
    "krippendorff_alpha": {"value": None, "ci95": None, "n": 2},
    "rankc": {"value": 0.625, "ci95": [0.5, 0.75], "n": 2}}}}}}


def read_scalars(folder: Path) -> dict[str, float]:
    """Every scalar of the event files in ``folder``, by tag (each logged once, at step 0)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    read = {}
    for name in events.Tags()["scalars"]:
        (point,) = events.Scalars(name)
        assert point.step == 0
        read[name] = point.value
    return read


def test_eval_scalars_are_the_grids_figures_by_tag():
    assert eval_scalars(GRID) == {
        "eval/heldout-after/zero-shot/accuracy/en": 0.5,
        "eval/heldout-after/zero-shot/accuracy/fr": 1.0,
        "eval/heldout-after/zero-shot/extraction_rate/en": 1.0,
        "eval/heldout-after/zero-shot/extraction_rate/fr": 0.5,
        "eval/heldout-after/zero-shot/consistency": 0.25,
        "eval/heldout-after/zero-shot/rankc": 0.625,
        "eval/heldout-after/zero-shot/accuracy/mean": 0.75,  # (0.5 + 1.0) / 2
    }  # no alpha (not computed), no agreement table (a pair's figures)


def test_tensorboard_gets_the_scalars_and_a_tracker_without_writer_is_named(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="calm_rag.evaluation.tracking"):
        assert log_evaluation(tmp_path, GRID, ["tensorboard", "mlflow"]) == {
            "tensorboard": "tensorboard"}
    assert read_scalars(tmp_path / "tensorboard") == eval_scalars(GRID)
    assert "align.report_to: mlflow got the training's logs only" in caplog.text
    assert log_evaluation(tmp_path / "none", GRID, ["none"]) == {}
    assert not (tmp_path / "none").exists()


def _training(folder: Path, report_to: str | list[str], events: bool) -> TrainResult:
    if events:
        (folder / "tensorboard").mkdir(parents=True)
    return TrainResult(folder, "dpo", 4, [], 1.0, {"report_to": report_to})


def test_a_cached_training_says_where_its_events_are_or_that_it_has_none(tmp_path):
    logged = _training(tmp_path / "a", ["tensorboard"], events=True)
    assert cached_tracking("r1", logged, ["tensorboard"]) == (
        "align r1: the training was read from the cache (trained with report_to: "
        "tensorboard; report_to is not part of the cache key); its TensorBoard events are in "
        f"{tmp_path / 'a' / 'tensorboard'} (links.json: rounds)")
    silent = _training(tmp_path / "b", "none", events=False)
    assert cached_tracking("r1", silent, ["tensorboard", "wandb"]) == (
        "align r1: the training was read from the cache (trained with report_to: none; "
        "report_to is not part of the cache key); it logged no TensorBoard events to link; "
        "nothing new goes to wandb; --force align trains it again and logs it")
    assert cached_tracking("r1", silent, ["none"]) is None


def _float32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard keeps a scalar as a 32-bit float


@pytest.mark.slow
def test_report_to_on_a_cached_training_links_events_and_logs_the_evaluation(
        sharp_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert run_cli(write_experiment(tmp_path, experiment(sharp_model, runs))) == 0
    capsys.readouterr()
    tracked = write_experiment(tmp_path, experiment(sharp_model, runs,
                                                    align__report_to="tensorboard"))
    assert run_cli(tracked) == 0  # the training is read from the cache: no events to link
    said = "".join(capsys.readouterr())
    assert ("the training was read from the cache (trained with report_to: none; report_to is "
            "not part of the cache key); it logged no TensorBoard events to link; --force "
            "align trains it again and logs it") in said
    run = latest_run(runs)
    links = json.loads((run / "links.json").read_text())
    assert "tensorboard" not in links["rounds"][0]
    assert links["evaluation"] == {"tensorboard": "tensorboard"}
    assert f"evaluation metrics logged to tensorboard: {run / 'tensorboard'}" in said
    grid = json.loads((run / "metrics.json").read_text())
    scalars = read_scalars(run / links["evaluation"]["tensorboard"])
    for cell, setting, metric, lang, value, *_ in metric_rows(grid):
        if lang is None or "/" not in lang:
            assert scalars[tag(cell, setting, metric, lang)] == _float32(value)
    assert {name.split("/")[1] for name in scalars} == {
        "train-before", "heldout-before", "train-after", "heldout-after"}

    assert run_cli(tracked, "--force", "align") == 0  # trained again, with its events
    assert run_cli(tracked) == 0  # and read from the cache: its events linked
    said = "".join(capsys.readouterr())
    events = json.loads((latest_run(runs) / "links.json").read_text())["rounds"][0]
    folder = (latest_run(runs) / events["tensorboard"]).resolve()
    assert f"its TensorBoard events are in {folder} (links.json: rounds)" in said
    assert list(folder.glob("events.out.tfevents.*"))
