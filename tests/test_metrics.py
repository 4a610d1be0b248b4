from __future__ import annotations

import math

import numpy as np
import pytest

from calm_rag.evaluation import compute_metrics, format_metrics_table
from calm_rag.evaluation.metrics import bootstrap_ci, consistency_of, language_answer
from tests.helpers import make_samples


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


# ---------------------------------------------------------------- every metric, by hand
# Three questions in three languages, worked out on paper. Each language answers with the
# majority of its samples (the first in index order on a tie); None is an unparsed sample.
#
#   q1, gold C: en [C, C]  zh [C, A]  fr [None, None]  → en C, zh C (tie, C first), fr none
#   q2, gold B: en [A]     zh [B]     fr [A]           → en A, zh B, fr A
#   q3, gold B: en [B]     zh [None]  fr [C]           → en B, zh none, fr C
HAND_SAMPLES = (make_samples({"en": ["C", "C"], "zh": ["C", "A"], "fr": [None, None]}, qid="q1")
                + make_samples({"en": ["A"], "zh": ["B"], "fr": ["A"]}, qid="q2", gold="B")
                + make_samples({"en": ["B"], "zh": [None], "fr": ["C"]}, qid="q3", gold="B"))
LOG2_3 = math.log2(3)
HAND_FIGURES = {
    # Per sample, mean over questions: en (1 + 0 + 1)/3; zh (1/2 + 1 + 0)/3; fr (0 + 0 + 0)/3.
    "accuracy": lambda m: {lang: m[lang]["value"] for lang in m} == pytest.approx(
        {"en": 2 / 3, "zh": 1 / 2, "fr": 0.0}) and m["en"]["n"] == 3,
    # Share of samples read: en (1 + 1 + 1)/3; zh (1 + 1 + 0)/3; fr (0 + 1 + 1)/3.
    "extraction_rate": lambda m: m == pytest.approx({"en": 1.0, "zh": 2 / 3, "fr": 2 / 3}),
    # Agreeing pairs of answering languages: q1 en=zh 1/1; q2 en=fr of 3 pairs 1/3; q3 en≠fr
    # 0/1 → (1 + 1/3 + 0)/3 = 4/9, all three questions have two answers.
    "consistency": lambda m: (m["value"], m["n"], m["skipped"]) == (pytest.approx(4 / 9), 3, 0),
    # Pairs agreeing on the gold: q1 en=zh=C 1/1; q2 en=fr=A, not B, 0/3; q3 0/1 → 1/3.
    "consistent_correct": lambda m: (m["value"], m["n"]) == (pytest.approx(1 / 3), 3),
    # Questions both languages answer, and the share answered alike: en-zh q1 yes, q2 no
    # → 1/2; en-fr q2 yes, q3 no → 1/2; fr-zh q2 no → 0; each language with itself 1.
    "agreement": lambda m: m == {"en": {"en": 1.0, "fr": 0.5, "zh": 0.5},
                                 "fr": {"en": 0.5, "fr": 1.0, "zh": 0.0},
                                 "zh": {"en": 0.5, "fr": 0.0, "zh": 1.0}},
    # Nominal alpha, units q1 {C, C}, q2 {A, B, A}, q3 {B, C} (7 values). Coincidences, each
    # ordered pair in a unit weighted 1/(m - 1): CC 2 (q1); AA 1, AB 1, BA 1 (q2); BC 1, CB 1
    # (q3). Totals A 2, B 2, C 3. Observed disagreement 4/7; expected (49 - 4 - 4 - 9)/(7·6)
    # = 16/21; alpha = 1 - (4/7)/(16/21) = 1/4.
    "krippendorff_alpha": lambda m: (m["value"], m["n"]) == (pytest.approx(0.25), 3),
    # Entropy of the answers per question: q1 {C: 2} 0 bits; q2 {A: 2, B: 1} log2 3 - 2/3;
    # q3 {B, C} 1 bit → mean (log2 3 + 1/3)/3; at most log2 3 for three languages.
    "answer_entropy": lambda m: (m["value"], m["n"], m["skipped"], m["max"]) == (
        pytest.approx((LOG2_3 + 1 / 3) / 3), 3, 0, pytest.approx(LOG2_3)),
}


@pytest.mark.parametrize("name", sorted(HAND_FIGURES))
def test_each_metric_equals_its_hand_computation(name):
    figures = compute_metrics(HAND_SAMPLES)["zero-shot"]
    assert figures["n_questions"] == 3 and figures["languages"] == ["en", "fr", "zh"]
    assert HAND_FIGURES[name](figures[name]), figures[name]


def test_every_registered_metric_has_a_hand_computed_case():
    """A metric calm_rag registers must get its figures worked out above (plugins registered
    by other tests are not calm_rag's)."""
    from calm_rag.registries import METRICS

    ours = {name for name in METRICS if METRICS.get(name).__module__.startswith("calm_rag.")}
    assert ours == set(HAND_FIGURES), f"no hand-computed case for {ours - set(HAND_FIGURES)}"


def test_rankc_equals_its_hand_computation():
    """RankC (computed from option scores, not registered) on two options: depth weights
    softmax(2, 1), w2 = 1/(1 + e); a pair scores w1 + w2 = 1 with the same top option, else
    w2 (both options are in the top 2). q1 ranks en A>B, zh A>B, fr B>A; q2 only en, zh,
    both B>A; q3 en A>B, zh B>A, fr A>B. Per question, mean over its pairs: q1 (w2 + 1 + w2)/3,
    q2 1, q3 (1 + w2 + w2)/3."""
    from calm_rag.evaluation.agreement import rankc

    w2 = 1 / (1 + math.e)
    ab, ba = {"A": -0.1, "B": -2.0}, {"A": -2.0, "B": -0.1}
    scores = {"q1": {"en": ab, "zh": ab, "fr": ba}, "q2": {"en": ba, "zh": ba},
              "q3": {"en": ab, "zh": ba, "fr": ab}}
    result = rankc(scores, ["en", "fr", "zh"])
    assert result is not None
    assert (result["value"], result["n"]) == (pytest.approx((5 + 4 * w2) / 9), 3)
    pairs = {pair: (v["value"], v["n"]) for pair, v in result["pairs"].items()}
    assert pairs == {"en-fr": (pytest.approx((1 + w2) / 2), 2),
                     "en-zh": (pytest.approx((2 + w2) / 3), 3),
                     "fr-zh": (pytest.approx(w2), 2)}
    assert result["chance"] == pytest.approx((1 + w2) / 2)  # w1/2 + w2 with w1 = 1 - w2
