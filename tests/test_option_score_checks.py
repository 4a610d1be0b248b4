"""Option scores checked against the samples before RankC: scores of other questions,
languages, settings or options, repeated rows and unscored samples are refused with one line;
matching scores give the RankC computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.datasets.samples import write_samples
from calm_rag.errors import InputError
from calm_rag.evaluation.agreement import check_option_scores, score_targets
from calm_rag.evaluation.grid import add_rankc, evaluation_grid
from calm_rag.io import write_jsonl
from tests.helpers import make_samples

# RankC of q1: en ranks A>B>C>D, fr B>A>C>D. Top-1 sets differ (0), top-2..4 agree (1), so
# RankC = 1 - w1 with w = softmax(4, 3, 2, 1): w1 = 1 / (1 + e^-1 + e^-2 + e^-3) = 0.643914.
# q2 is ranked alike (1). Overall: the mean, (0.356086 + 1) / 2 = 0.678043.
Q1_RANKC = 1 - 1 / (1 + math.exp(-1) + math.exp(-2) + math.exp(-3))
OTHER = "(pass the option scores of these samples, e.g. their run's option_scores.jsonl)"
ORDERS = {("q1", "en"): "ABCD", ("q1", "fr"): "BACD", ("q2", "en"): "CABD", ("q2", "fr"): "CABD"}


def samples_two_questions():
    return (make_samples({"en": ["C"], "fr": ["C"]}, qid="q1")
            + make_samples({"en": ["A"], "fr": ["A"]}, qid="q2"))


def score_rows(cell: str = "heldout/before") -> list[dict]:
    return [{"cell": cell, "question_id": qid, "lang": lang, "setting": "zero-shot",
             "scores": {label: -float(rank) for rank, label in enumerate(order)}}
            for (qid, lang), order in ORDERS.items()]


def run_metrics(tmp_path: Path, rows: list[dict], capsys) -> tuple[int, str, str]:
    write_samples(tmp_path / "s.jsonl", samples_two_questions())
    write_jsonl(tmp_path / "scores.jsonl", rows)
    code = main(["metrics", str(tmp_path / "s.jsonl"), "--option-scores",
                 str(tmp_path / "scores.jsonl"), "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_hand_computed_case():
    assert Q1_RANKC == pytest.approx(0.356086, abs=1e-6)


def test_matching_scores_give_the_hand_computed_rankc(tmp_path, capsys):
    code, out, _ = run_metrics(tmp_path, score_rows(), capsys)
    assert code == 0
    rankc = json.loads(out)["zero-shot"]["rankc"]
    assert rankc["value"] == pytest.approx((Q1_RANKC + 1) / 2) == pytest.approx(0.678043,
                                                                                abs=1e-6)
    assert rankc["pairs"]["en-fr"]["value"] == pytest.approx(0.678043, abs=1e-6)
    assert rankc["n"] == 2


def test_a_language_alias_is_read_as_the_samples_code(tmp_path, capsys):
    rows = score_rows()
    samples = (make_samples({"en": ["C"], "zh": ["C"]}, qid="q1")
               + make_samples({"en": ["A"], "zh": ["A"]}, qid="q2"))
    for row in rows:
        row["lang"] = {"fr": "cn"}.get(row["lang"], row["lang"])  # CALM's name for zh
    checked = check_option_scores(enumerate(rows, 1), score_targets(samples), "scores.jsonl")
    assert [row["lang"] for row in checked] == ["en", "zh", "en", "zh"]


@pytest.mark.parametrize("edit, line, message", [
    (lambda rows: [dict(r, question_id="x" + r["question_id"]) for r in rows], 1,
     "field 'question_id': question 'xq1' matches no sample question (the samples have 2, "
     "e.g. 'q1') " + OTHER),
    (lambda rows: [dict(r, scores={"A": 0.0, "B": -1.0, "X": -2.0, "Y": -3.0}) for r in rows], 1,
     "field 'scores': scores options A,B,X,Y but question 'q1' has options A,B,C,D (score each "
     "of the question's options, by its label)"),
    (lambda rows: [*rows[:2], dict(rows[2], lang="../x"), rows[3]], 3,
     "field 'lang': '../x' is not a language code (the samples' languages are en, fr)"),
    (lambda rows: [*rows[:3], dict(rows[3], lang="de")], 4,
     "field 'lang': language 'de' is not among the samples' languages (en, fr) " + OTHER),
    (lambda rows: [dict(rows[0], setting="rag"), *rows[1:]], 1,
     "field 'setting': setting 'rag' is not among the samples' settings (zero-shot) " + OTHER),
    (lambda rows: [*rows, rows[1]], 5,
     "field 'question_id': question 'q1' in fr (zero-shot) is scored twice (also line 2) "
     "(keep one row)"),
])
def test_mismatched_scores_are_refused_naming_the_line(tmp_path, capsys, edit, line, message):
    code, out, err = run_metrics(tmp_path, edit(score_rows()), capsys)
    assert code == 2 and out == ""
    assert err == f"calm-rag metrics: error: {tmp_path / 'scores.jsonl'}:{line}: {message}\n"


def test_unscored_samples_are_refused(tmp_path, capsys):
    code, _, err = run_metrics(tmp_path, score_rows()[:3], capsys)
    assert code == 2 and err.count("\n") == 1
    assert ("scores.jsonl: scores 3 of the 4 sampled (question, language) pairs; 1 have none, "
            "e.g. question 'q2' in fr (zero-shot): RankC would rest on a subset") in err


def test_the_grid_checks_rows_against_its_cells():
    samples = samples_two_questions()
    cells = {"heldout/before": samples}
    grid = add_rankc(evaluation_grid(cells), score_rows(), cells)
    value = grid["cells"]["heldout/before"]["metrics"]["zero-shot"]["rankc"]["value"]
    assert value == pytest.approx(0.678043, abs=1e-6)
    with pytest.raises(InputError, match="option scores name the cells heldout/after but the "
                                         "grid has heldout/before"):
        add_rankc(evaluation_grid(cells), score_rows("heldout/after"), cells)
    with pytest.raises(InputError, match=r"option scores of cell heldout/before: scores 3 of "
                                         r"the 4 sampled"):
        add_rankc(evaluation_grid(cells), score_rows()[:3], cells)
    unknown = [dict(score_rows()[0], question_id="q9"), *score_rows()[1:]]
    with pytest.raises(InputError, match="question 'q9' matches no sample question"):
        add_rankc(evaluation_grid(cells), unknown)  # without cells: the grid's questions
    unscored = add_rankc(evaluation_grid(cells), [])
    assert "rankc" not in unscored["cells"]["heldout/before"]["metrics"]["zero-shot"]
