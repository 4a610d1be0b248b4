from __future__ import annotations

import json

import pytest

from calm_rag.cli import main
from calm_rag.datasets.samples import write_samples
from calm_rag.errors import InputError
from calm_rag.evaluation.study import format_study_table, score_votes, study_policies, vote_study
from calm_rag.vote.voting import VoteConfig
from tests.helpers import make_samples

PNG = b"\x89PNG\r\n\x1a\n"


def _two_questions() -> list:
    return (make_samples({"en": ["A", "B"], "zh": ["A"]}, qid="q1", gold="A")
            + make_samples({"en": ["C"], "zh": ["D"]}, qid="q2", gold="D"))


def test_a_row_scores_targets_ties_and_clean_pairs():
    # q1: A wins 2 to 1, right; en's B is rejected against its A, a clean pair. q2 ties, en
    # is read first so C wins, wrong; zh's D is rejected but zh has nothing to choose.
    row = score_votes(_two_questions(), VoteConfig())
    assert row == {"target_accuracy": 0.5, "coverage": 1.0, "ties": 1, "pairs": 1,
                   "clean_pairs": 1, "clean_share": 1.0}
    dropped = score_votes(_two_questions(), VoteConfig(tie="drop"))
    assert (dropped["target_accuracy"], dropped["coverage"]) == (1.0, 0.5)


def _crowd() -> list:
    samples = []
    for i in range(12):
        gold, wrong = "ABCD"[i % 4], "ABCD"[(i + 2) % 4]
        samples += make_samples({"en": [gold, gold], "fr": [gold if i % 3 else wrong],
                                 "ja": [wrong, wrong, wrong]}, qid=f"q{i}", gold=gold)
    return samples


def test_study_averages_every_subset_of_each_size():
    policies = study_policies(VoteConfig(tie="drop"))
    assert list(policies) == ["pooled", "language-balanced", "dawid-skene"]
    study = vote_study(_crowd(), policies)
    assert study["languages"] == ["en", "fr", "ja"] and study["questions"] == 12
    pooled = study["policies"]["pooled"]
    assert [(k, v["subsets"]) for k, v in pooled["by_size"].items()] == [("2", 3), ("3", 1)]
    assert pooled["all"] == pooled["by_size"]["3"]
    # ja answers three times: pooled, it outvotes en and fr whenever fr is wrong or absent.
    balanced = study["policies"]["language-balanced"]
    assert balanced["all"]["target_accuracy"] > pooled["all"]["target_accuracy"]
    # The size-2 mean is the mean of the three pairs' rows.
    pairs = [score_votes([s for s in _crowd() if s.lang in subset], policies["pooled"])
             for subset in (("en", "fr"), ("en", "ja"), ("fr", "ja"))]
    assert pooled["by_size"]["2"]["ties"] == pytest.approx(sum(r["ties"] for r in pairs) / 3)
    table = format_study_table(study)
    assert "| pooled | 2 (mean of 3) |" in table and "| dawid-skene | all 3 |" in table


def test_weighted_joins_the_study_only_with_weights():
    policies = study_policies(VoteConfig(), {"ja": 0.1})
    assert policies["weighted"].weights == {"ja": 0.1}
    assert policies["pooled"].weights == {}


def test_study_needs_gold_answers():
    with pytest.raises(InputError, match="no gold"):
        vote_study(make_samples({"en": ["A"], "zh": ["B"]}, gold=None),
                   study_policies(VoteConfig()))


def test_study_command_prints_and_writes_table_json_and_plot(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    write_samples(path, _crowd())
    out = tmp_path / "study"
    assert main(["study", "votes", str(path), "--out", str(out), "--weights", "ja=0.5"]) == 0
    printed = capsys.readouterr().out
    assert "| weighted | all 3 |" in printed
    assert (out / "votes_study.md").read_text().strip() in printed
    saved = json.loads((out / "votes_study.json").read_text())
    assert set(saved["policies"]) == {"pooled", "language-balanced", "weighted", "dawid-skene"}
    assert (out / "votes_study.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize(("flags", "field"), [(["--weights", "ja=-1"], "--weights"),
                                               (["--min-languages", "0"], "--min-languages"),
                                               (["--min-agreement", "2"], "--min-agreement")])
def test_study_command_refuses_bad_flags_on_one_line(tmp_path, capsys, flags, field):
    path = tmp_path / "samples.jsonl"
    write_samples(path, _crowd())
    assert main(["study", "votes", str(path), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert field in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_study_command_never_writes_into_its_input(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    write_samples(path, _crowd())
    assert main(["study", "votes", str(path), "--out", str(tmp_path)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl"]
