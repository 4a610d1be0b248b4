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


def test_krippendorff_alpha_of_languages_as_raters():
    from calm_rag.evaluation.agreement import krippendorff_alpha

    # Two raters, four units: (A,A) (B,B) (A,B) (B,A). By hand: observed disagreement
    # 4/8, expected 2*4*4/(8*7) = 4/7, so alpha = 1 - (1/2)/(4/7) = 1/8.
    rows = [{"answers": {"en": x, "zh": y}} for x, y in ("AA", "BB", "AB", "BA")]
    result = krippendorff_alpha(rows, ["en", "zh"])
    assert result["value"] == pytest.approx(0.125) and result["n"] == 4
    low, high = result["ci95"]
    assert low <= high
    agreeing = [{"answers": {"en": x, "zh": x, "fr": None}} for x in "ABCAB"]
    assert krippendorff_alpha(agreeing, ["en", "fr", "zh"])["value"] == pytest.approx(1.0)
    # One letter throughout: agreement cannot be told from chance, so alpha is undefined.
    same = [{"answers": {"en": "A", "zh": "A"}}] * 3
    assert krippendorff_alpha(same, ["en", "zh"]) == {"value": None, "ci95": [None, None],
                                                       "n": 3}


def test_answer_entropy_in_bits_skips_questions_under_two_answers():
    from calm_rag.evaluation.agreement import answer_entropy, entropy_of

    assert entropy_of({"en": "A", "zh": "A", "fr": "B", "de": "B"}) == pytest.approx(1.0)
    assert entropy_of({"en": "A", "zh": "A"}) == 0.0
    assert math.isnan(entropy_of({"en": "A", "zh": None}))
    rows = [{"answers": {"en": "A", "zh": "B"}}, {"answers": {"en": "A", "zh": "A"}},
            {"answers": {"en": "A", "zh": None}}]
    result = answer_entropy(rows, ["en", "zh"])
    assert result["value"] == pytest.approx(0.5)
    assert (result["n"], result["skipped"], result["max"]) == (2, 1, 1.0)


def test_agreement_measures_are_standard_metrics_with_intervals():
    samples = [s for i in range(6) for s in make_samples(
        {"en": ["A"], "zh": ["A" if i % 3 else "B"], "fr": ["ABC"[i % 3]]}, qid=f"q{i}")]
    m = compute_metrics(samples)["zero-shot"]
    for name in ("krippendorff_alpha", "answer_entropy"):
        assert set(m[name]) >= {"value", "ci95", "n"} and m[name]["ci95"][0] is not None
    table = format_metrics_table({"zero-shot": m})
    assert "Krippendorff's alpha (languages as raters): " in table
    assert "Answer entropy across languages: " in table and "bits" in table
