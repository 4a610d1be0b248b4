from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from calm_rag.evaluation import (
    consistency_change,
    evaluation_grid,
    extraction_methods,
    format_grid_table,
    retrieval_delta,
    write_report,
)
from calm_rag.evaluation.plots import plot_agreement
from calm_rag.evaluation.report import training_section
from tests.helpers import make_samples

PNG = b"\x89PNG\r\n\x1a\n"

# Gold is C. Before alignment: q1 en=C zh=A fr=A, q2 en=C zh=C fr=B (consistency 1/3 each);
# with retrieval q1's zh turns right. After alignment every language answers C.
BEFORE = {"q1": {"en": ["C"], "zh": ["A"], "fr": ["A"]},
          "q2": {"en": ["C"], "zh": ["C"], "fr": ["B"]}}
BEFORE_RAG = {**BEFORE, "q1": {"en": ["C"], "zh": ["C"], "fr": ["A"]}}
AFTER = {q: {lang: ["C"] for lang in ("en", "zh", "fr")} for q in ("q1", "q2")}


def samples_of(spec: dict, setting: str = "zero-shot", gold: str | None = "C") -> list:
    return [s for qid, answers in spec.items()
            for s in make_samples(answers, qid=qid, gold=gold, setting=setting)]


def both(zero_shot: dict, rag: dict) -> list:
    return samples_of(zero_shot) + samples_of(rag, "rag")


@pytest.fixture
def grid() -> dict:
    heldout_after = both(AFTER, AFTER)
    # The first sample (q1, en, zero-shot) was answered by the log-prob fallback: 1 of 6.
    heldout_after[0] = replace(heldout_after[0], extraction="logprob")
    return evaluation_grid({
        "train/before": both(BEFORE, BEFORE_RAG), "train/after": both(AFTER, AFTER),
        "heldout/before": both(BEFORE, BEFORE_RAG), "heldout/after": heldout_after,
    })


def test_retrieval_delta_classes_each_language_answer():
    zero_shot = {"q1": {"en": ["C", "C"], "zh": ["A"], "fr": [None]},
                 "q2": {"en": ["A"], "zh": ["C"], "fr": ["A"]}}
    rag = {"q1": {"en": ["A", "A"], "zh": ["C"], "fr": ["C"]},
           "q2": {"en": ["B"], "zh": ["C"], "fr": [None]}}
    # q3 has no gold: a change can be neither help nor hurt. q4 was never asked with retrieval.
    samples = (both(zero_shot, rag)
               + samples_of({"q3": {"en": ["A"], "zh": ["A"], "fr": [None]}}, gold=None)
               + samples_of({"q3": {"en": ["A"], "zh": ["B"], "fr": [None]}}, "rag", gold=None)
               + samples_of({"q4": {"en": ["C"]}}))
    delta = retrieval_delta(samples)
    assert delta["overall"] == {"helped": 2, "hurt": 1, "changed": 3, "unchanged": 3}
    assert delta["n"] == 9 and delta["without_gold"] == 3 and delta["unpaired"] == 1
    assert delta["by_language"]["en"] == {"helped": 0, "hurt": 1, "changed": 1, "unchanged": 1,
                                          "n": 3}
    assert delta["questions"]["helped"] == {"fr": ["q1"], "zh": ["q1"]}
    assert delta["questions"]["hurt"] == {"en": ["q1"]}
    # wrong → other wrong, wrong → unanswered, and a change without gold
    assert delta["questions"]["changed"] == {"en": ["q2"], "fr": ["q2"], "zh": ["q3"]}
    assert retrieval_delta(samples_of(zero_shot)) == {}


def test_extraction_methods_are_shares_per_setting():
    samples = make_samples({"en": ["C", "C", None], "zh": ["A"]})
    samples[3] = replace(samples[3], extraction="logprob")
    pending = [replace(s, extraction="", setting="rag") for s in samples[:2]]
    assert extraction_methods(samples + pending) == {
        "zero-shot": {"marker_letter": 0.5, "none": 0.25, "logprob": 0.25},
        "rag": {"unextracted": 1.0},
    }


def test_grid_holds_every_cell_and_is_json(grid):
    assert list(grid["cells"]) == ["train/before", "train/after", "heldout/before",
                                   "heldout/after"]
    cell = grid["cells"]["train/before"]
    assert set(cell) == {"n_samples", "metrics", "extraction", "consistency_by_question",
                         "retrieval_delta"}
    assert cell["n_samples"] == 12 and set(cell["metrics"]) == {"zero-shot", "rag"}
    assert cell["consistency_by_question"]["zero-shot"] == pytest.approx({"q1": 1 / 3,
                                                                          "q2": 1 / 3})
    assert cell["retrieval_delta"]["overall"] == {"helped": 1, "hurt": 0, "changed": 0,
                                                  "unchanged": 5}
    assert grid["cells"]["heldout/after"]["extraction"]["zero-shot"]["logprob"] == \
        pytest.approx(1 / 6)
    assert json.loads(json.dumps(grid, allow_nan=False)) == grid
    one_setting = evaluation_grid({"heldout/before": samples_of(BEFORE)})
    assert one_setting["cells"]["heldout/before"]["retrieval_delta"] is None
    assert one_setting["consistency_change"] == {"heldout": {}}
    with pytest.raises(ValueError, match="split/phase"):
        evaluation_grid({"before": samples_of(BEFORE)})


def test_consistency_change_is_paired_over_questions(grid):
    change = consistency_change(grid, "train")
    assert set(change) == {"zero-shot", "rag"}
    assert change["zero-shot"]["before"]["value"] == pytest.approx(1 / 3)
    assert change["zero-shot"]["after"]["value"] == 1.0
    assert change["zero-shot"]["change"]["value"] == pytest.approx(2 / 3)
    assert change["zero-shot"]["change"]["n"] == 2
    assert grid["consistency_change"]["train"] == change


def test_grid_table_rows(grid):
    table = format_grid_table(grid)
    lines = table.splitlines()
    assert lines[0] == ("| cell | setting | acc en | acc fr | acc zh | consistency [95% CI] | "
                        "consistent & correct | answered (log-prob) |")
    assert len(lines) == 2 + 4 * 2
    # en right on both, fr on neither, zh on q2; consistent and correct: q2's (en, zh) only.
    assert ("| train/before | zero-shot | 100.0 | 0.0 | 50.0 | 33.3 [33.3, 33.3] | 16.7 | "
            "100.0 (0.0) |") in lines
    assert ("| heldout/after | zero-shot | 100.0 | 100.0 | 100.0 | 100.0 [100.0, 100.0] | "
            "100.0 | 100.0 (16.7) |") in lines


def test_report_has_tables_plots_and_relative_links_only(grid, tmp_path):
    folder = tmp_path / "runs" / "demo" / "2025"
    loss_plot = plot_agreement(grid["cells"]["train/after"]["metrics"]["rag"],
                               folder / "adapter" / "loss.png", "a stand-in loss plot")
    training = {"method": "dpo", "rows": 12, "seconds": 3.25, "final_loss": 0.693147,
                "loss_plot": loss_plot, "merged_model": str(folder / "merged")}
    path = write_report(folder, grid, title="CALM demo",
                        summary={"experiment": "demo", "model": "smollm2-135m-instruct"},
                        training=training)
    assert path == folder / "report.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# CALM demo\n") and "- **model**: smollm2-135m-instruct" in text
    assert format_grid_table(grid) in text
    assert ("| train | zero-shot | 33.3 [33.3, 33.3] | 100.0 [100.0, 100.0] | "
            "+66.7 [+66.7, +66.7] | 2 |") in text
    assert "| cell | setting | answered | marker_letter | logprob |" in text
    assert ("| train/before | zh | 2 | 1 (50.0%) | 0 (0.0%) | 0 (0.0%) | 1 (50.0%) | +1 |"
            in text)
    assert "- **final loss**: 0.6931" in text and "- **seconds**: 3.2" in text
    assert "![Training loss](adapter/loss.png)" in text
    assert "- **merged model**: merged" in text
    assert "## Agreement across languages" in text
    assert "| cell | setting | consistency % | Krippendorff's alpha | entropy (bits) |" in text

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links[:2] == ["plots/accuracy.png", "plots/retrieval_delta.png"]
    # four heatmaps at most: the held-out questions, before and after, both settings
    assert sorted(link for link in links if link.startswith("plots/agreement_heldout")) == [
        f"plots/agreement_heldout_{phase}_{setting}.png"
        for phase in ("after", "before") for setting in ("rag", "zero-shot")]
    # ... and the same pairs side by side, before → after (tests/test_explore.py draws them)
    assert sorted(link for link in links if "agreement_change" in link) == [
        f"plots/agreement_change_heldout_{setting}.png" for setting in ("rag", "zero-shot")]
    for link in links:
        assert not link.startswith("/") and ".." not in link
        assert (folder / link).read_bytes().startswith(PNG)
    assert str(tmp_path) not in text
    assert sorted(p.name for p in (folder / "plots").iterdir()) == sorted(
        link.removeprefix("plots/") for link in links if link.startswith("plots/"))


def test_training_loss_plot_outside_the_folder_is_linked_relatively(tmp_path):
    text = training_section({"method": "sft", "loss_plot": tmp_path / "train" / "loss.png"},
                            tmp_path / "report")
    assert "- **method**: sft" in text and "(../train/loss.png)" in text


def test_report_says_how_many_questions_tied(grid, tmp_path):
    from calm_rag.evaluation.votes import vote_summary
    from calm_rag.vote.pairs import build_pairs
    from calm_rag.vote.voting import VoteConfig, tally
    from tests.helpers import make_samples

    # Two languages: q1 and q3 split one to one and tie; q2 agrees.
    samples = (make_samples({"en": ["A"], "zh": ["B"]}, qid="q1")
               + make_samples({"en": ["C"], "zh": ["C"]}, qid="q2")
               + make_samples({"en": ["B"], "zh": ["D"]}, qid="q3"))
    config = VoteConfig(policy="weighted", weights={"en": 1.0}, tie="drop")
    counted = tally(samples, config)
    summary = vote_summary(counted, build_pairs(samples, counted.votes, config), config)
    assert (summary["ties"], summary["ties_dropped"], summary["targets"]) == (2, 2, 1)
    assert set(summary["language_weights"]["zero-shot"]) == {"en", "zh"}
    text = write_report(tmp_path, grid, title="t", summary={}, votes=summary).read_text()
    assert "- **tied**: 2 (66.7%), of which dropped: 2" in text
    assert "- **questions voted**: 3, given a target: 1 (33.3%)" in text
    assert "Language weights (zero-shot):" in text
