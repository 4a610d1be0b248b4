"""Language sets as an experiment axis, held-out languages, and the option-scores stage,
on real runs of the tiny model (hf backend, no retrieval; seconds each)."""

from __future__ import annotations

import json

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from calm_rag.io import read_jsonl
from calm_rag.pipeline import run_experiment
from calm_rag.pipeline.language_grid import set_experiment
from calm_rag.records import Question, Sample
from tests.helpers import experiment, write_experiment


def _load(tmp_path, sharp_model, **changes):
    return load_experiment(write_experiment(tmp_path, experiment(sharp_model, tmp_path / "runs",
                                                                 **changes)))


def test_language_set_keys_are_checked(tmp_path, sharp_model):
    exp = _load(tmp_path, sharp_model, data__language_sets=[["EN", "fr"], ["en", "fr", "de"]],
                evaluation__heldout_languages=["it"])
    assert exp.data.language_sets == (("en", "fr"), ("en", "fr", "de"))
    child = set_experiment(exp, ("en", "fr"))
    assert child.name == "tiny-en-fr" and child.data.languages == ("en", "fr", "it")
    assert child.data.sample_per_language and not child.data.language_sets
    bad = [({"data__language_sets": [["en", "en"]]}, r"data\.language_sets\[0\]"),
           ({"data__language_sets": [["en"], ["en"]]}, "lists a set twice"),
           ({"data__language_sets": [[]]}, "needs at least one language"),
           ({"evaluation__heldout_languages": ["de"]}, "de not in data.languages"),
           ({"evaluation__heldout_languages": ["en", "fr"]}, "no language left to train on")]
    for changes, message in bad:
        with pytest.raises(InputError, match=message) as err:
            _load(tmp_path, sharp_model, **changes)
        assert err.value.path is not None


def _stages(result, stage):
    return [s for s in result.stages if s["stage"] == stage]


@pytest.mark.slow
def test_a_grid_of_language_sets_shares_samples(tmp_path, sharp_model):
    exp = _load(tmp_path, sharp_model, data__language_sets=[["en", "fr"], ["en", "fr", "de"]],
                evaluation__option_scores=True)
    result = run_experiment(exp, progress=False)
    grid = json.loads((result.folder / "grid.json").read_text())
    assert list(grid["language_sets"]) == ["en-fr", "en-fr-de"]
    for summary in grid["language_sets"].values():
        assert summary["votes"]["questions_voted"] > 0
        assert summary["cells"]["heldout/after"]["zero-shot"]["rankc"]["n"] == 2
    report = (result.folder / "report.md").read_text()
    assert "## Vote per set" in report and "ties" in report and "RankC" in report
    # The second set sampled only German afresh: English and French came from the cache.
    samples = _stages(result, "sample")
    first_en = [s for s in samples if s["label"] == "r1/train/zero-shot/en"]
    assert [s["cached"] for s in first_en] == [False, True]
    assert {s["key"] for s in first_en} == {first_en[0]["key"]}
    assert [s["cached"] for s in samples if s["label"].endswith("/de")].count(False) >= 1
    options = [s for s in _stages(result, "option_scores")
               if s["label"] == "heldout/before/zero-shot/en"]
    assert [s["cached"] for s in options] == [False, True]


@pytest.mark.slow
def test_heldout_language_is_evaluated_never_trained(tmp_path, sharp_model):
    exp = _load(tmp_path, sharp_model, data__languages=["en", "fr", "de"],
                evaluation__heldout_languages=["de"], evaluation__option_scores=True)
    result = run_experiment(exp, progress=False)
    assert {s.lang for r in result.rounds for s in r.samples} == {"en", "fr"}
    assert all(p.lang != "de" for r in result.rounds for p in r.pairs)
    assert "de" in result.grid["cells"]["heldout/after"]["metrics"]["zero-shot"]["languages"]
    rows = [row for _, row in read_jsonl(result.folder / "option_scores.jsonl")]
    cells = {(r["cell"], r["lang"]) for r in rows}
    assert ("heldout/after", "de") in cells and ("train/before", "en") in cells
    question = Question.from_dict(
        next(read_jsonl(result.folder / "eval" / "heldout-after.jsonl"))[1]["question"])
    assert set(rows[0]["scores"]) == set(question.options)
    rankc = result.grid["cells"]["heldout/after"]["metrics"]["zero-shot"]["rankc"]
    assert set(rankc["pairs"]) == {"de-en", "de-fr", "en-fr"}
    report = (result.folder / "report.md").read_text()
    assert "## RankC" in report
    assert "held out of the vote and of training, evaluated only: de" in report
    _after_scores_are_the_aligned_models(result, rows, sharp_model)


def _after_scores_are_the_aligned_models(result, rows, base):
    """With ``align.merge: false`` the after-cells' option scores come from the base model
    *with the trained adapter*: every one differs from its before-cell's, and each equals what
    an independent scorer loaded on base + the run's adapter gives for the same prompt."""
    from calm_rag.pipeline.scoring import scoring_dtype
    from calm_rag.sampling.letter_scores import LetterScorer
    from calm_rag.sampling.prompts import prompt_fields

    by_cell = {(r["cell"], r["question_id"], r["lang"], r["setting"]): r["scores"] for r in rows}
    after = {k[1:]: v for k, v in by_cell.items() if k[0] == "heldout/after"}
    before = {k[1:]: v for k, v in by_cell.items() if k[0] == "heldout/before"}
    assert after.keys() == before.keys() and len(after) == 2 * 3  # 2 questions x 3 languages
    assert all(after[k] != before[k] for k in after)
    scorer = LetterScorer.load(str(base), dtype=scoring_dtype(),
                               adapter=str(result.folder / "adapter"), progress=False)
    evaluated = [Question.from_dict(row["question"]) for _, row in
                 read_jsonl(result.folder / "eval" / "heldout-after.jsonl")]
    prompts = []
    for question in {(q.id, q.lang): q for q in evaluated}.values():
        instruction, input_ = prompt_fields(question)
        prompts.append(Sample(question=question, text="", instruction=instruction, input=input_))
    for sample, scores in zip(prompts, scorer.score(prompts), strict=True):
        expected = after[(sample.question.id, sample.lang, "zero-shot")]
        assert scores == pytest.approx(expected, abs=1e-4)


def test_option_scores_are_off_by_default(tmp_path, sharp_model):
    assert not _load(tmp_path, sharp_model).evaluation.option_scores
