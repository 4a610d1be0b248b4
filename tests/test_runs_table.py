"""run.metrics_frame() and ``calm-rag runs`` on hand-made run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from calm_rag.cli import main
from calm_rag.runs import METRIC_COLUMNS, RunFolder


def cell(consistency: float, acc_en: float) -> dict:
    """One cell's zero-shot metrics, shaped as metrics.json holds them."""
    return {"n_samples": 4, "metrics": {"zero-shot": {
        "n_questions": 2, "languages": ["en", "fr"],
        "accuracy": {"en": {"value": acc_en, "ci95": [0.0, 1.0], "n": 2},
                     "fr": {"value": 0.0, "ci95": [0.0, 0.0], "n": 2}},
        "extraction_rate": {"en": 1.0, "fr": 0.5},
        "consistency": {"value": consistency, "ci95": [0.25, 0.75], "n": 2, "skipped": 0},
        "consistent_correct": {"value": 0.0, "ci95": [None, None], "n": 1},
        "agreement": {"en": {"en": 1.0, "fr": 0.5}, "fr": {"en": 0.5, "fr": 1.0}},
        "krippendorff_alpha": {"value": None, "ci95": [None, None], "n": 0}}}}


def make_run(runs: Path, name: str, stamp: str, config: dict, after: float) -> Path:
    folder = runs / name / stamp
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    grid = {"cells": {"heldout/before": cell(0.5, 0.5), "heldout/after": cell(after, 1.0)}}
    (folder / "metrics.json").write_text(json.dumps(grid))
    return folder


CONFIG = {"name": "demo", "data": {"train": 2, "languages": ["en", "fr"]},
          "align": {"beta": 0.1, "method": "dpo"}}


def test_metrics_frame_is_long_form_with_intervals_and_counts(tmp_path):
    run = RunFolder(make_run(tmp_path, "demo", "20260101-000000", CONFIG, 0.75))
    frame = run.metrics_frame()
    assert list(frame.columns) == METRIC_COLUMNS
    before = frame[frame["cell"] == "heldout/before"]
    rows = [tuple(None if pd.isna(v) else v for v in row)  # NaN, <NA> as None
            for row in before.itertuples(index=False)]
    assert rows == [
        ("heldout/before", "zero-shot", "accuracy", "en", 0.5, 0.0, 1.0, 2),
        ("heldout/before", "zero-shot", "accuracy", "fr", 0.0, 0.0, 0.0, 2),
        ("heldout/before", "zero-shot", "extraction_rate", "en", 1.0, None, None, None),
        ("heldout/before", "zero-shot", "extraction_rate", "fr", 0.5, None, None, None),
        ("heldout/before", "zero-shot", "consistency", None, 0.5, 0.25, 0.75, 2),
        ("heldout/before", "zero-shot", "consistent_correct", None, 0.0, None, None, 1),
        ("heldout/before", "zero-shot", "agreement", "en/en", 1.0, None, None, None),
        ("heldout/before", "zero-shot", "agreement", "en/fr", 0.5, None, None, None),
        ("heldout/before", "zero-shot", "agreement", "fr/en", 0.5, None, None, None),
        ("heldout/before", "zero-shot", "agreement", "fr/fr", 1.0, None, None, None)]
    assert len(frame) == 20  # the same ten rows for heldout/after; alpha had no value
    after = frame[(frame["cell"] == "heldout/after") & (frame["metric"] == "consistency")]
    assert after["value"].tolist() == [0.75]


def test_runs_lines_up_runs_with_headline_metrics_and_differing_keys(tmp_path, capsys):
    make_run(tmp_path, "demo", "20260101-000000", CONFIG, 0.75)
    changed = {**CONFIG, "align": {"beta": 0.2, "method": "dpo"}}
    make_run(tmp_path, "demo", "20260102-000000", changed, 1.0)
    make_run(tmp_path, "other", "20260103-000000", {**CONFIG, "name": "other"}, 0.5)
    (tmp_path / "demo" / "20260104-000000").mkdir()  # unfinished: no metrics.json
    assert main(["runs", "demo", "--runs-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| run | cell | zero-shot consistency | zero-shot consistent_correct | align.beta |",
        "|---|---|---|---|---|",
        "| demo/20260101-000000 | heldout/after | 0.750 | 0.000 | 0.1 |",
        "| demo/20260102-000000 | heldout/after | 1.000 | 0.000 | 0.2 |",
        f"2 run(s) in {tmp_path}; config keys that differ: align.beta"]
    assert main(["runs", "--runs-dir", str(tmp_path), "--metric", "accuracy",
                 "--cell", "heldout/before"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| run | cell | zero-shot accuracy en | zero-shot accuracy fr "
                        "| align.beta | name |")
    assert lines[4] == "| other/20260103-000000 | heldout/before | 0.500 | 0.000 | 0.1 | other |"


@pytest.mark.parametrize("argv, message", [
    (["runs", "nope"], "no finished run of experiment 'nope'"),
    (["runs", "demo", "--cell", "train/after"], "has no cell 'train/after' (it has "
                                                "heldout/before, heldout/after)"),
])
def test_runs_refuses_in_one_line(tmp_path, capsys, argv, message):
    make_run(tmp_path, "demo", "20260101-000000", CONFIG, 0.75)
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
