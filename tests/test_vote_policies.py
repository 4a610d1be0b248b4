from __future__ import annotations

import json
from dataclasses import replace

import pytest

from calm_rag.cli import main
from calm_rag.config import from_mapping, parse_yaml, plain
from calm_rag.datasets.samples import write_samples
from calm_rag.errors import InputError
from calm_rag.registries import VOTE_POLICIES
from calm_rag.vote.policies import DawidSkeneOptions
from calm_rag.vote.voting import VoteConfig, WeightsOptions, tally, vote
from tests.helpers import make_samples


def test_policies_are_registered_and_pooled_is_the_default():
    assert {"pooled", "language-balanced", "weighted", "dawid-skene"} <= set(VOTE_POLICIES)
    assert VoteConfig().policy == "pooled"


def test_language_balanced_gives_each_language_one_vote():
    # en parsed five answers: pooled, it outvotes two languages; balanced, it is one vote.
    samples = make_samples({"en": ["A"] * 5, "zh": ["B", "B"], "fr": ["B", None]})
    assert vote(samples, VoteConfig()).answer == "A"
    v = vote(samples, VoteConfig(policy="language-balanced"))
    assert (v.answer, v.status) == ("B", "majority")
    assert v.counts == {"A": 5, "B": 3}  # the record still carries the pooled counts


@pytest.mark.parametrize(("tie", "expected", "status"),
                         [("drop", "B", "majority"), ("first-seen", "A", "tie-broken")])
def test_a_tie_inside_a_language_is_settled_as_configured(tie, expected, status):
    samples = make_samples({"zh": ["A", "B"], "en": ["A"], "fr": ["B"], "de": ["B"]})
    config = VoteConfig(policy="language-balanced", tie=tie, language_order=("zh", "en"))
    v = vote(samples, config)
    assert (v.answer, v.status) == (expected, status)


def weighted(weights: dict, **rest) -> VoteConfig:
    return VoteConfig(policy="weighted", options={"weights": weights}, **rest)


def test_weighted_counts_each_language_by_its_weight_and_min_agreement_applies():
    samples = make_samples({"en": ["A"], "zh": ["B"], "fr": ["B"]})
    assert vote(samples, VoteConfig(policy="weighted")).answer == "B"
    heavy = weighted({"EN": 3})
    assert heavy.options == WeightsOptions({"en": 3.0}) and heavy.weights == {"en": 3.0}
    assert vote(samples, heavy).answer == "A"  # 3 against 2: a share of 0.6
    v = vote(samples, weighted({"en": 3}, min_agreement=0.7))
    assert (v.answer, v.status) == (None, "abstained")
    v = vote(samples, weighted({"en": 2}, tie="drop"))
    assert (v.answer, v.status) == (None, "tie-dropped")


@pytest.mark.parametrize(("block", "key"), [
    ({"policy": "majority"}, "vote.policy"),
    ({"policy": "weighted", "options": {"weights": {"en": -1}}}, "vote.options.weights"),
    ({"policy": "weighted", "options": {"weights": {"klingon": 1}}}, "vote.options.weights"),
    ({"options": {"weights": {"en": 2}}}, "vote.options.weights"),
    ({"policy": "weighted", "options": {"weights": ["en"]}}, "vote.options.weights"),
    ({"policy": "dawid-skene", "options": {"iterations": 0}}, "vote.options.iterations"),
    ({"policy": "weighted", "options": ["en"]}, "vote.options"),
    # The old key still reads; its errors name the key as written.
    ({"policy": "weighted", "weights": {"en": -1}}, "vote.weights"),
    ({"policy": "weighted", "weights": {"klingon": 1}}, "vote.weights"),
    ({"weights": {"en": 2}}, "vote.weights"),
    ({"policy": "weighted", "weights": ["en"]}, "vote.weights"),
    ({"policy": "weighted", "weights": {"en": 2}, "options": {"weights": {"en": 3}}},
     "vote.options.weights"),
    ({"policy": "weighted", "weights": {"en": 2}, "options": ["en"]}, "vote.options"),
])
def test_policy_config_errors_name_the_key(block, key):
    with pytest.raises(InputError) as err:
        from_mapping(VoteConfig, block, prefix="vote")
    assert err.value.field == key


@pytest.mark.parametrize(("block", "key", "hint"), [
    ({"policy": "weighted", "options": {"weight": {"en": 2}}}, "vote.options.weight",
     "did you mean weights?"),
    ({"policy": "dawid-skene", "options": {"iteration": 5}}, "vote.options.iteration",
     "did you mean iterations?"),
    ({"policy": "pooled", "options": {"weights": {"en": 2}}}, "vote.options.weights",
     "policy 'pooled' takes no options; 'weights' is an option of policy weighted"),
    ({"policy": "dawid-skene", "options": {"weights": {}}}, "vote.options.weights",
     "policy 'dawid-skene' takes iterations; 'weights' is an option of policy weighted"),
])
def test_unknown_options_name_the_key_and_the_close_ones(block, key, hint):
    with pytest.raises(InputError) as err:
        from_mapping(VoteConfig, block, prefix="vote")
    assert err.value.field == key and err.value.hint.startswith(hint)


def test_options_are_typed_by_the_policy_and_the_old_weights_key_still_reads(tmp_path, caplog):
    text = "vote:\n  policy: weighted\n  weights: {en: 2, ja: 0.5}\n  tie: drop\n"
    data, lines = parse_yaml(text, tmp_path / "exp.yaml")
    with caplog.at_level("WARNING"):
        old = from_mapping(VoteConfig, data["vote"], lines=lines, prefix="vote")
    assert "vote.weights is deprecated: write vote.options.weights" in caplog.text
    new = from_mapping(VoteConfig, {"policy": "weighted", "tie": "drop",
                                    "options": {"weights": {"en": 2, "ja": 0.5}}})
    assert old == new and new.options == WeightsOptions({"en": 2.0, "ja": 0.5})
    assert plain(new)["options"] == {"weights": {"en": 2.0, "ja": 0.5}}
    assert "weights" not in plain(new)  # a run's config.yaml says it the new way
    # An error under the old key names the line it is on.
    bad = parse_yaml("vote:\n  policy: weighted\n  weights: {en: -1}\n", tmp_path / "x.yaml")
    with pytest.raises(InputError) as err:
        from_mapping(VoteConfig, bad[0]["vote"], path="x.yaml", lines=bad[1], prefix="vote")
    assert (err.value.field, err.value.line) == ("vote.weights", 3)
    # An old run folder's config.yaml held `weights: {}` under every policy: read silently.
    caplog.clear()
    assert from_mapping(VoteConfig, {"policy": "dawid-skene", "weights": {}}) == \
        VoteConfig(policy="dawid-skene")
    assert VoteConfig(policy="dawid-skene").options == DawidSkeneOptions(iterations=100)
    assert "deprecated" not in caplog.text


def test_options_follow_a_replaced_policy_only_at_their_defaults():
    assert replace(VoteConfig(), policy="weighted").options == WeightsOptions()
    with pytest.raises(InputError, match="expected NoOptions"):
        replace(weighted({"en": 2}), policy="pooled")
    assert replace(weighted({"en": 2}), policy="pooled", options=None).weights == {}
    # Code written against the old field still builds and reads it.
    assert VoteConfig(policy="weighted", weights={"en": 2}).options == WeightsOptions({"en": 2})


def _crowd(n: int = 40) -> list:
    """Questions where en, fr and de answer the gold label and ja answers another letter."""
    samples = []
    for i in range(n):
        gold = "ABCD"[i % 4]
        wrong = "ABCD"[(i + 1) % 4]
        answers = {"en": [gold], "fr": [gold], "de": [gold if i % 5 else wrong], "ja": [wrong]}
        samples += make_samples(answers, qid=f"q{i}", gold=gold)
    return samples


def test_dawid_skene_estimates_reliability_without_gold():
    samples = _crowd()
    # A question where only en and ja answer: one vote each, so balanced voting must tie.
    samples += make_samples({"en": ["A"], "ja": ["B"]}, qid="split", gold="A")
    counted = tally(samples, VoteConfig(policy="dawid-skene", tie="drop"))
    weights = counted.weights["zero-shot"]
    assert set(weights) == {"en", "fr", "de", "ja"}
    assert weights["en"] > weights["de"] > weights["ja"]
    assert all(0.0 <= w <= 1.0 for w in weights.values())
    split = counted.votes[-1]
    assert (split.answer, split.status) == ("A", "majority")
    balanced = tally(samples, VoteConfig(policy="language-balanced", tie="drop")).votes[-1]
    assert balanced.status == "tie-dropped"


def test_dawid_skene_fits_each_setting_apart():
    samples = _crowd(8) + make_samples({"en": ["A"], "zh": ["A"]}, qid="r", setting="rag")
    weights = tally(samples, VoteConfig(policy="dawid-skene")).weights
    assert set(weights) == {"zero-shot", "rag"}
    assert set(weights["rag"]) == {"en", "zh"}


def test_vote_command_takes_a_policy_and_reports_ties_and_weights(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    write_samples(path, _crowd(8) + make_samples({"en": ["A"], "ja": ["B"]}, qid="x"))
    out = tmp_path / "out"
    assert main(["vote", str(path), "--out", str(out), "--vote-policy", "weighted",
                 "--weights", "ja=0.5", "--tie", "drop"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["policy"] == "weighted"
    assert summary["language_weights"]["zero-shot"]["ja"] == 0.5
    assert summary["ties"] == 0 and summary["targets"] == 9
    capsys.readouterr()
    assert main(["vote", str(path), "--out", str(tmp_path / "o2"),
                 "--vote-policy", "language-balanced", "--tie", "drop"]) == 0
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    # q0 and q5 (de and ja wrong, en and fr right) and x (en against ja) tie two to two.
    assert (summary["ties"], summary["ties_dropped"], summary["targets"]) == (3, 3, 6)


@pytest.mark.parametrize("flags", [["--weights", "en=two"], ["--weights", "en=2"],
                                   ["--vote-policy", "weighted", "--weights", "en=-1"]])
def test_vote_command_refuses_bad_policy_flags(tmp_path, capsys, flags):
    path = tmp_path / "samples.jsonl"
    write_samples(path, make_samples({"en": ["A"]}))
    assert main(["vote", str(path), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_gold_votes_take_gold_whatever_the_policy():
    from calm_rag.vote.pairs import gold_votes

    samples = _crowd(8) + make_samples({"en": ["A"], "ja": ["B"]}, qid="x", gold=None)
    votes = gold_votes(samples, VoteConfig(policy="dawid-skene"))
    assert [v.answer for v in votes[:4]] == ["A", "B", "C", "D"]
    assert (votes[-1].answer, votes[-1].status) == (None, "no-gold")
    assert {v.status for v in votes[:-1]} == {"gold"}


def test_an_experiment_reads_the_options_of_its_policy_and_describes_each(tmp_path, capsys):
    from calm_rag.experiment import describe, load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text("name: t\nruns_dir: runs\nvote:\n  policy: weighted\n"
                    "  options: {weights: {en: 2}}\n", encoding="utf-8")
    loaded = load_experiment(path, ["vote.options.weights.ja=0.5"])
    assert loaded.vote.options == WeightsOptions({"en": 2.0, "ja": 0.5})
    old = load_experiment(path, ["vote.options=null", "vote.weights={en: 2, ja: 0.5}"])
    assert old.vote == loaded.vote
    path.write_text("name: t\nruns_dir: runs\nvote:\n  policy: weighted\n"
                    "  options: {weight: {en: 2}}\n", encoding="utf-8")
    assert main(["run", str(path), "--quiet"]) == 2
    said = capsys.readouterr().err.strip()
    assert len(said.splitlines()) == 1 and f"{path}:5" in said
    assert "field 'vote.options.weight': unknown option of policy 'weighted'" in said
    assert "did you mean weights?" in said
    manual = describe()
    for line in ("vote.options (policy: weighted): Per-language weights",
                 "vote.options.weights (dict[str, float], default {}): Each language's weight",
                 "vote.options (policy: dawid-skene): Options of the ``dawid-skene`` policy",
                 "vote.options.iterations (int, default 100): EM iterations at most",
                 "vote.options (policy: pooled): This policy takes no options."):
        assert any(m.startswith(line) for m in manual), line
