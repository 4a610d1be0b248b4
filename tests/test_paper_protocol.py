"""CALM's protocol: align on one set of questions (``data``), evaluate on another
(``data.eval``); and the report's warning when the log-prob fallback gave the answers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.evaluation.grid import fallback_warnings
from calm_rag.evaluation.report import fallback_section
from calm_rag.experiment import DataConfig
from calm_rag.pipeline.questions import load_sets, split_questions
from tests.helpers import CALM_REFERENCE, experiment, latest_run, run_cli, write_experiment

TRAIN_IDS = ["t1", "t2", "t3", "t4", "t5", "t6"]
EVAL_IDS = ["e1", "e2", "e3", "e4"]
ENTRY = {"path": "{lang}.jsonl", "id": "qid", "parallel": "id", "stem": "q",
         "options": ["opts"], "answer": "gold"}


def write_set(folder: Path, ids: list[str]) -> Path:
    """One small question file per language (en, fr), questions ``ids`` with gold A or B."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "fr"):
        (folder / f"{lang}.jsonl").write_text("".join(json.dumps(
            {"qid": qid, "q": f"{lang} question {qid}?", "opts": {"A": "yes", "B": "no"},
             "gold": "AB"[i % 2]}) + "\n" for i, qid in enumerate(ids)), encoding="utf-8")
    return folder


def two_sets(tmp_path: Path, train: int = 4, heldout: int = 3) -> dict:
    """``data`` reading the training set, with ``data.eval`` the evaluation set."""
    return {"source": "mytrain", "path": str(write_set(tmp_path / "train", TRAIN_IDS)),
            "entry": ENTRY, "languages": ["en", "fr"], "train": train, "heldout": heldout,
            "eval": {"source": "mytest", "path": str(write_set(tmp_path / "test", EVAL_IDS)),
                     "entry": ENTRY}}


def expected(ids: list[str], size: int, seed: int = 0) -> set[str]:
    """The first ``size`` of ``ids`` shuffled by ``seed``, as the split draws them."""
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    return set(shuffled[:size])


def test_train_and_eval_come_from_their_own_sets(tmp_path):
    data = from_mapping(DataConfig, two_sets(tmp_path))
    trained, evaluated = load_sets(data, tmp_path)
    assert evaluated is not None
    splits = split_questions(trained.questions, data, evaluated.questions)
    assert {q.id for q in splits["train"]} == expected(TRAIN_IDS, 4)
    assert {q.id for q in splits["heldout"]} == expected(EVAL_IDS, 3)
    assert len(splits["train"]) == 8 and len(splits["heldout"]) == 6  # two languages each
    assert {q.stem for q in splits["heldout"] if q.id == "e1"} <= {"en question e1?",
                                                                 "fr question e1?"}


def test_sizes_are_checked_per_set(tmp_path):
    data = from_mapping(DataConfig, two_sets(tmp_path, train=6, heldout=5))
    trained, evaluated = load_sets(data, tmp_path)
    assert evaluated is not None
    with pytest.raises(InputError, match="4 questions of the evaluation set .* data.heldout "
                                         "asks for 5") as err:
        split_questions(trained.questions, data, evaluated.questions)
    assert err.value.field == "data.heldout"


def test_a_question_in_both_sets_is_refused(tmp_path):
    both = {"source": "bundled", "dataset": "commonsense", "languages": ["en", "fr"],
            "train": 4, "heldout": 4,
            "eval": {"source": "bundled", "dataset": "commonsense"}}
    data = from_mapping(DataConfig, both)
    trained, evaluated = load_sets(data, tmp_path)
    assert evaluated is not None
    with pytest.raises(InputError, match="question ids are in both the training set and "
                                         "data.eval"):
        split_questions(trained.questions, data, evaluated.questions)


def test_without_eval_the_one_set_is_split_as_before(tmp_path):
    data = from_mapping(DataConfig, {**two_sets(tmp_path, heldout=2), "eval": None})
    trained, evaluated = load_sets(data, tmp_path)
    assert evaluated is None
    splits = split_questions(trained.questions, data)
    shuffled = list(TRAIN_IDS)
    random.Random(0).shuffle(shuffled)
    assert {q.id for q in splits["train"]} == set(shuffled[:4])
    assert {q.id for q in splits["heldout"]} == set(shuffled[4:6])
    assert "no separate training set" in data.protocol()


def test_check_prints_both_sets(tmp_path, capsys):
    path = write_experiment(tmp_path / "exp", {"name": "two", "data": two_sets(tmp_path),
                                               "retrieval": {"enabled": False}})
    assert run_cli(path, "--check") == 0
    out = capsys.readouterr().out
    assert "training set (data.source):" in out and "evaluation set (data.eval):" in out
    assert ("split: train 4 of 6 training questions, heldout 3 of 4 test questions, "
            "in 2 languages (seed 0)") in out
    assert "data: aligned on mytrain " in out


@pytest.mark.skipif(not CALM_REFERENCE.is_dir(), reason="../shared/calm-reference is absent")
def test_shipped_calm_xcsqa_trains_on_training_and_evaluates_on_test(capsys):
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "calm-xcsqa.yaml"
    assert run_cli(pipeline, "--check") == 0
    out = capsys.readouterr().out
    assert "  en: 899 rows" in out and "  ja: 100 rows" in out
    # Every training row stays: short rows that look like their neighbours are not doubted
    # where nothing shifted (the row check once dropped 24 of them).
    assert "899 questions line up in every language" in out and "dropped" not in out
    assert ("split: train 899 of 899 training questions, heldout 100 of 100 test questions, "
            "in 6 languages (seed 0)") in out


def question_ids(path: Path) -> set[str]:
    """The question ids of a run folder's samples file."""
    return {json.loads(line)["question"]["id"] for line in path.read_text().splitlines()}


def test_pipeline_trains_on_one_set_and_evaluates_the_other(sharp_model, tmp_path):
    runs = tmp_path / "runs"
    config = experiment(sharp_model, runs, data=two_sets(tmp_path))
    assert run_cli(write_experiment(tmp_path / "exp", config)) == 0
    folder = latest_run(runs)
    assert question_ids(folder / "samples.jsonl") == expected(TRAIN_IDS, 4)
    assert question_ids(folder / "eval" / "train-before.jsonl") == expected(TRAIN_IDS, 4)
    for phase in ("before", "after"):
        assert question_ids(folder / "eval" / f"heldout-{phase}.jsonl") == expected(EVAL_IDS, 3)
    report = (folder / "report.md").read_text()
    assert "4 train, 3 heldout questions x 2 languages" in report


def grid(**cells: dict[str, float]) -> dict:
    """A grid holding only what the warning reads: per cell, one setting's method shares."""
    return {"cells": {name.replace("__", "/"): {"extraction": {"zero-shot": shares}}
                      for name, shares in cells.items()}}


def test_fallback_over_a_fifth_of_the_answers_is_warned():
    hand = grid(heldout__before={"default": 0.75, "logprob": 0.25},      # 25% of answers
                heldout__after={"default": 0.8, "logprob": 0.2},         # 20%: not over
                train__before={"default": 0.35, "logprob": 0.15, "none": 0.5})  # 15/50 = 30%
    lines = fallback_warnings(hand)
    assert len(lines) == 2
    assert lines[0].startswith("heldout/before zero-shot: the log-prob fallback gave 25.0% of "
                               "the answers (over 20.0%)")
    assert lines[1].startswith("train/before zero-shot: the log-prob fallback gave 30.0%")
    section = fallback_section(hand)
    assert section.count("> **Warning**: ") == 2


def test_no_warning_without_fallback_answers():
    assert fallback_warnings(grid(heldout__before={"default": 0.9, "none": 0.1})) == []
    assert fallback_warnings(grid(heldout__before={"none": 1.0})) == []
    assert fallback_section(grid(heldout__before={"default": 1.0})) == ""
