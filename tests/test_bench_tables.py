"""The pure parts of the bench scripts whose tables README quotes (bench/demo_timing.py,
bench/chosen_language.py): how a run's stage records become columns and how rows are
written. Hand-made records, no model and no run: milliseconds."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import chosen_language  # noqa: E402
import demo_timing  # noqa: E402


def stage(name: str, label: str, seconds: float) -> dict:
    return {"stage": name, "label": label, "key": "k", "cached": False, "seconds": seconds}


def test_stage_seconds_sums_each_phase_from_the_manifests_labels():
    stages = [stage("retrieve", "medical-demo", 2.0),
              stage("sample", "r1/train/zero-shot", 10.0), stage("sample", "r1/train/rag", 5.5),
              stage("sample", "train/before/zero-shot", 3.0),
              stage("sample", "heldout/before/rag", 1.5),
              stage("answers", "r1/train/rag", 0.25), stage("align", "round 1", 20.0),
              stage("sample", "train/after/rag", 4.0),
              stage("sample", "heldout/after/zero-shot", 2.0)]
    assert demo_timing.stage_seconds(stages) == {
        "retrieve": 2.0, "sampling": 15.5, "before-eval": 4.5, "answers": 0.25, "DPO": 20.0,
        "after-eval": 6.0}


def timing_row(label: str, wall: float, parts: dict[str, float]) -> dict:
    return {"label": label, "wall": wall, "load": 1.5, "parts": parts, "rerun": 6.25,
            "rerun_cached": (13, 13), "reason": "r"}


def test_the_timing_table_has_the_rest_and_the_ratios_leave_out_sub_second_parts():
    fast = timing_row("`auto`: bfloat16", 100.0, {"index built": 20.0, "answers": 0.5,
                                                  "DPO": 30.0})
    slow = timing_row("float32", 150.0, {"index built": 22.0, "answers": 0.75, "DPO": 45.0})
    lines = demo_timing.table([fast, slow])
    assert lines[0] == ("| demo, fresh clone | load at start | wall | index built | answers | "
                        "DPO | rest | rerun (stages cached) |")
    assert lines[2] == ("| `auto`: bfloat16 | 1.50 | 100.0 s | 20.0 s | 0.5 s | 30.0 s | "
                        "49.5 s | 6.2 s (13 of 13) |")
    assert lines[3].split(" | ")[6] == "82.2 s"  # 150 - 22 - 0.75 - 45 = 82.25
    assert demo_timing.ratios([fast, slow]) == [
        "Ratios, float32 over `auto`: wall 1.50x, index built 1.10x, DPO 1.50x."]
    assert demo_timing.ratios([fast]) == []


def test_the_chosen_language_table_counts_each_language_and_all():
    pivot = {"de": {"pairs": 4, "in_language": 1}, "en": {"pairs": 2, "in_language": 2}}
    regen = {"de": {"pairs": 4, "in_language": 3, "sources": {"regenerated": 2}},
             "en": {"pairs": 2, "in_language": 2, "sources": {"regenerated": 0}}}
    assert chosen_language.table(pivot, regen)[2:] == [
        "| de | 4 | 1 (25.0%) | 3 (75.0%) | 2 |",
        "| en | 2 | 2 (100.0%) | 2 (100.0%) | 0 |",
        "| all | 6 | 3 (50.0%) | 5 (83.3%) | 2 |"]
