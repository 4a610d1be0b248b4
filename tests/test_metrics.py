from __future__ import annotations

import math

import numpy as np
import pytest

from calm_rag.evaluation import compute_metrics, format_metrics_table
from calm_rag.evaluation.metrics import bootstrap_ci, consistency_of, language_answer
from tests.conftest import make_samples


def test_consistency_is_the_share_of_agreeing_language_pairs():
    # en=C, zh=C, fr=A: pairs (en,zh) agree, (en,fr) and (fr,zh) do not.
    agreeing = consistency_of({"en": "C", "zh": "C", "fr": "A"}, gold="C")
    assert agreeing == pytest.approx((1 / 3, 1 / 3))
    assert consistency_of({"en": "A", "zh": "A"}, gold="C") == (1.0, 0.0)


def test_unparsed_languages_are_left_out_and_fewer_than_two_skip():
    # CALM's script removed items while iterating and divided by zero here.
    assert consistency_of({"en": "C", "zh": None, "fr": None, "de": "C"}) [0] == 1.0
    same, correct = consistency_of({"en": "C", "zh": None})
    assert math.isnan(same) and math.isnan(correct)


def test_language_answer_is_the_majority_of_its_samples():
    samples = make_samples({"en": ["A", "B", "B", None]})
    assert language_answer(samples) == "B"
    assert language_answer(make_samples({"en": [None]})) is None


def test_metrics_per_setting():
    samples = (make_samples({"en": ["C", "C"], "zh": ["C", "A"], "fr": [None, None]}, qid="q1")
               + make_samples({"en": ["A"], "zh": ["B"], "fr": ["A"]}, qid="q2", gold="A")
               + make_samples({"en": ["A"], "zh": [None]}, qid="q3"))
    m = compute_metrics(samples)["zero-shot"]
    assert m["n_questions"] == 3 and m["languages"] == ["en", "fr", "zh"]
    assert m["accuracy"]["en"]["value"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["accuracy"]["zh"]["value"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert m["extraction_rate"]["fr"] == pytest.approx(0.5)
    # q1: en=C, zh=C (first of a C/A tie) → 1; q2: en=A, zh=B, fr=A → 1/3; q3 skipped.
    assert m["consistency"]["value"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["consistency"]["n"] == 2 and m["consistency"]["skipped"] == 1
    assert m["consistent_correct"]["value"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["agreement"]["en"]["fr"] == 1.0 and m["agreement"]["en"]["zh"] == 0.5
    table = format_metrics_table(compute_metrics(samples))
    assert "| en |" in table and "Cross-lingual consistency" in table


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = np.array([0.0, 1.0] * 50 + [np.nan])
    low, high = bootstrap_ci(values)
    assert low < 0.5 < high and high - low < 0.3
    assert bootstrap_ci(values) == (low, high)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([1.0])))
