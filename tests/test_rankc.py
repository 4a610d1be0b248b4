"""RankC (Qi et al., EMNLP 2023) from option log-probabilities: the measure itself, the
option-scores stage on a real (tiny) model, and where it shows (metrics.json, report, CLI)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from calm_rag.cli import main
from calm_rag.evaluation.agreement import (
    RANKC_NEEDS,
    rank_consistency,
    rank_weights,
    rankc,
    rankc_chance,
)
from calm_rag.evaluation.grid import add_rankc, evaluation_grid
from calm_rag.evaluation.tables import format_metrics_table, rankc_section
from calm_rag.io import write_jsonl
from tests.helpers import make_samples


def test_weights_favour_the_top_ranks():
    weights = rank_weights(4)
    assert weights.sum() == pytest.approx(1.0)
    assert list(weights) == sorted(weights, reverse=True)
    assert weights[0] / weights[1] == pytest.approx(np.e)  # softmax of 4, 3, 2, 1


def test_same_ranking_is_one_and_order_matters():
    a = {"A": -0.1, "B": -2.0, "C": -3.0}
    assert rank_consistency(a, {"A": -5.0, "B": -6.0, "C": -9.0}) == pytest.approx(1.0)
    reversed_ = {"A": -3.0, "B": -2.0, "C": -0.1}
    w = rank_weights(3)
    # top-1 {A} vs {C}: 0; top-2 {A,B} vs {C,B}: 1/2; top-3: 1
    assert rank_consistency(a, reversed_) == pytest.approx(w[1] / 2 + w[2])
    # disagreeing on the top option costs more than on the last two
    swap_top = {"A": -2.0, "B": -0.1, "C": -3.0}
    swap_tail = {"A": -0.1, "B": -3.0, "C": -2.0}
    assert rank_consistency(a, swap_top) < rank_consistency(a, swap_tail) < 1.0


def test_other_options_are_not_compared():
    assert np.isnan(rank_consistency({"A": 0.0, "B": -1.0}, {"A": 0.0, "C": -1.0}))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_chance_is_the_mean_over_all_rankings(n):
    labels = [chr(65 + i) for i in range(n)]
    first = {label: -float(i) for i, label in enumerate(labels)}
    values = [rank_consistency(first, {label: -float(perm.index(label)) for label in labels})
              for perm in itertools.permutations(labels)]
    assert rankc_chance(n) == pytest.approx(np.mean(values))


def test_rankc_per_pair_and_overall_with_intervals():
    rng = np.random.default_rng(0)
    scores = {}
    for q in range(30):
        base = rng.normal(size=4)
        scores[f"q{q}"] = {
            "en": dict(zip("ABCD", base, strict=True)),
            "fr": dict(zip("ABCD", base + 0.01 * rng.normal(size=4), strict=True)),
            "zh": dict(zip("ABCD", rng.normal(size=4), strict=True)),
        }
    result = rankc(scores, ["en", "fr", "zh"])
    assert set(result["pairs"]) == {"en-fr", "en-zh", "fr-zh"}
    assert result["pairs"]["en-fr"]["value"] > 0.95  # nearly the same scores
    assert result["pairs"]["en-zh"]["value"] < result["pairs"]["en-fr"]["value"]
    low, high = result["ci95"]
    assert low <= result["value"] <= high and result["n"] == 30
    assert result["chance"] == pytest.approx(rankc_chance(4))
    assert rankc(scores, ["en"]) is None  # one language: no pair


def _scores_rows(samples, cell="heldout/before", flip=()):
    rows = []
    for s in samples:
        order = list(s.question.labels)
        if s.lang in flip:
            order.reverse()
        rows.append({"cell": cell, "question_id": s.question.id, "lang": s.lang,
                     "setting": s.setting,
                     "scores": {label: -float(i) for i, label in enumerate(order)}})
    return rows


def test_grid_report_and_metrics_command(tmp_path, capsys):
    samples = (make_samples({"en": ["C"], "fr": ["C"], "zh": ["A"]}, qid="q1")
               + make_samples({"en": ["B"], "fr": ["B"], "zh": ["B"]}, qid="q2"))
    rows = _scores_rows(samples, flip=("zh",))
    grid = add_rankc(evaluation_grid({"heldout/before": samples}), rows)
    found = grid["cells"]["heldout/before"]["metrics"]["zero-shot"]["rankc"]
    assert found["pairs"]["en-fr"]["value"] == pytest.approx(1.0)
    assert found["pairs"]["en-zh"]["value"] == pytest.approx(found["pairs"]["fr-zh"]["value"])
    assert found["pairs"]["en-zh"]["value"] < 0.5
    assert "## RankC" in rankc_section(grid) and "en-zh" in rankc_section(grid)
    assert "RankC" in format_metrics_table(grid["cells"]["heldout/before"]["metrics"])
    json.dumps(grid)  # metrics.json: no NaN, no numpy types

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    from calm_rag.datasets.samples import write_samples

    write_samples(run / "eval" / "heldout-before.jsonl", samples)
    write_jsonl(run / "option_scores.jsonl",
                rows + _scores_rows(samples, cell="heldout/after"))
    assert main(["metrics", str(run / "eval" / "heldout-before.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "RankC per language pair: en-fr 1.000" in out and RANKC_NEEDS not in out

    write_samples(tmp_path / "plain.jsonl", samples)
    assert main(["metrics", str(tmp_path / "plain.jsonl")]) == 0
    out = capsys.readouterr().out
    assert RANKC_NEEDS in out and out.count("RankC") == 1  # one line says it is skipped


def test_scores_of_several_cells_need_a_run_file(tmp_path, capsys):
    samples = make_samples({"en": ["C"], "fr": ["C"]})
    write_jsonl(tmp_path / "scores.jsonl",
                _scores_rows(samples) + _scores_rows(samples, cell="train/after"))
    from calm_rag.datasets.samples import write_samples

    write_samples(tmp_path / "s.jsonl", samples)
    code = main(["metrics", str(tmp_path / "s.jsonl"), "--option-scores",
                 str(tmp_path / "scores.jsonl")])
    assert code == 2
    assert "none named after s.jsonl" in capsys.readouterr().err


def test_a_malformed_scores_file_is_named_with_its_line(tmp_path, capsys):
    samples = make_samples({"en": ["C"], "fr": ["C"]})
    from calm_rag.datasets.samples import write_samples

    write_samples(tmp_path / "s.jsonl", samples)
    rows = _scores_rows(samples)
    rows[1]["scores"] = {"A": "high"}
    write_jsonl(tmp_path / "scores.jsonl", rows)
    assert main(["metrics", str(tmp_path / "s.jsonl"), "--option-scores",
                 str(tmp_path / "scores.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "scores.jsonl" in err and ":2" in err and err.count("\n") == 1
