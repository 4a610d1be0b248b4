from __future__ import annotations

import dataclasses

import pytest

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.vote.pairs import build_pairs
from calm_rag.vote.voting import VoteConfig, preset, vote, vote_all
from tests.helpers import make_samples


def test_majority_pools_every_language_and_sample():
    samples = make_samples({"en": ["C", "C", "A"], "zh": ["A", "C", None], "fr": ["B"]})
    v = vote(samples, VoteConfig())
    assert (v.answer, v.status) == ("C", "majority")
    assert v.counts == {"C": 3, "A": 2, "B": 1}
    assert v.by_language == {"en": {"C": 2, "A": 1}, "fr": {"B": 1}, "zh": {"A": 1, "C": 1}}
    assert (v.n_responses, v.n_parsed, v.gold) == (7, 6, "C")


@pytest.mark.parametrize(
    ("tie", "order", "expected", "status"),
    [
        ("drop", ("en", "zh"), None, "tie-dropped"),
        ("first-seen", ("en", "zh"), "A", "tie-broken"),
        ("first-seen", ("zh", "en"), "B", "tie-broken"),
        ("pivot", ("zh", "en"), "A", "tie-broken"),
    ],
)
def test_tie_policies(tie, order, expected, status):
    samples = make_samples({"zh": ["B", "A"], "en": ["A", "B", "A"], "fr": ["B"]})
    v = vote(samples, VoteConfig(tie=tie, language_order=order))
    assert (v.answer, v.status) == (expected, status)


def test_pivot_tie_drops_when_the_pivot_is_itself_tied():
    samples = make_samples({"en": ["A", "B"], "zh": ["A", "B"]})
    assert vote(samples, VoteConfig(tie="pivot")).status == "tie-dropped"


def test_min_agreement_abstains():
    samples = make_samples({"en": ["A", "A"], "zh": ["B"], "fr": ["C"]})
    assert vote(samples, VoteConfig(min_agreement=0.5)).answer == "A"
    v = vote(samples, VoteConfig(min_agreement=0.6))
    assert (v.answer, v.status) == (None, "abstained")


def test_no_parsed_answers():
    v = vote(make_samples({"en": [None, None]}), VoteConfig())
    assert (v.answer, v.status, v.n_parsed) == (None, "no-answers", 0)


def test_pairs_are_same_language_and_carry_provenance():
    samples = make_samples({"en": ["C", "A", "B"], "zh": ["C", "C", "A"], "fr": ["A"]})
    config = VoteConfig()
    pairs = build_pairs(samples, vote_all(samples, config), config)
    assert [(p.lang, p.rejected_answer) for p in pairs] == [("en", "A"), ("en", "B"), ("zh", "A")]
    first = pairs[0]
    assert first.chosen == "en response 0: Answer: C" and first.chosen_answer == "C"
    assert first.rejected_sample_id == "q1/en/zero-shot/1"
    assert first.chosen_sample_id == "q1/en/zero-shot/0"
    assert first.vote_counts == {"C": 3, "A": 3, "B": 1}
    assert first.instruction == "instruction en" and first.input == "input en"
    assert {p.chosen_source for p in pairs} == {"same-language"}


def test_languages_without_an_agreeing_response_skip_or_borrow_the_pivot():
    samples = make_samples({"en": ["C", "C"], "zh": ["C"], "fr": ["A", "B"]})
    skip = VoteConfig()
    assert build_pairs(samples, vote_all(samples, skip), skip) == []
    borrow = VoteConfig(chosen_fallback="pivot", pivot="zh")
    pairs = build_pairs(samples, vote_all(samples, borrow), borrow)
    assert [(p.lang, p.chosen_source, p.rejected_answer) for p in pairs] == [
        ("fr", "pivot:zh", "A"), ("fr", "pivot:zh", "B")]


def test_chosen_responses_are_cycled_and_unparsed_can_be_rejected():
    samples = make_samples({"en": ["C", "C", "A", "B", None]})
    config = VoteConfig(unparsed="reject")
    pairs = build_pairs(samples, vote_all(samples, config), config)
    assert [p.chosen_sample_id[-1] for p in pairs] == ["0", "1", "0"]
    assert [p.rejected_answer for p in pairs] == ["A", "B", None]


def test_cap_keeps_languages_round_robin():
    samples = make_samples({"en": ["C", "C", "A", "B"], "zh": ["C", "A", "B"]})
    config = VoteConfig(max_pairs_per_question=3)
    pairs = build_pairs(samples, vote_all(samples, config), config)
    langs = [p.lang for p in pairs]
    assert set(langs) == {"en", "zh"} and langs[0] != langs[1] and langs[2] == langs[0]


def test_a_cap_of_one_spreads_over_the_languages_across_questions():
    samples = [s for i in range(12) for s in make_samples(
        {lang: ["A", "A", "B"] for lang in ("en", "zh", "fr")}, qid=f"q{i}")]
    config = VoteConfig(max_pairs_per_question=1)
    pairs = build_pairs(samples, vote_all(samples, config), config)
    assert len(pairs) == 12 and {p.lang for p in pairs} == {"en", "zh", "fr"}
    assert pairs == build_pairs(samples, vote_all(samples, config), config)  # stable


def test_settings_vote_separately():
    samples = make_samples({"en": ["A"]}) + make_samples({"en": ["B"]}, setting="rag")
    votes = {v.setting: v.answer for v in vote_all(samples, VoteConfig())}
    assert votes == {"zero-shot": "A", "rag": "B"}


def test_config_errors_name_the_key():
    with pytest.raises(InputError, match="tie.*unknown tie policy 'coin'"):
        VoteConfig(tie="coin")
    with pytest.raises(InputError, match="vote.colour.*unknown key.*min_agreement"):
        from_mapping(VoteConfig, {"colour": "red"}, prefix="vote")
    with pytest.raises(InputError, match="field 'vote.min_agreement': must lie in"):
        from_mapping(VoteConfig, {"min_agreement": 1.5}, prefix="vote")
    with pytest.raises(InputError, match="field 'vote.language_order': lists a language twice"):
        from_mapping(VoteConfig, {"language_order": ["en", "EN"]}, prefix="vote")
    with pytest.raises(InputError, match="field 'vote.chosen_fallback': unknown chosen"):
        from_mapping(VoteConfig, {"chosen_fallback": "translate"}, prefix="vote")
    with pytest.raises(InputError, match="min_agreement"):
        VoteConfig(min_agreement=2)
    with pytest.raises(InputError, match="unknown language code"):
        VoteConfig(pivot="xx")


def test_calm_preset_reads_cn_as_zh():
    config = preset("calm")
    assert config.language_order == ("ja", "fr", "it", "zh", "de", "en")
    assert dataclasses.replace(config, tie="drop").tie == "drop"
