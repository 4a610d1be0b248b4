"""``calm-rag metrics --paper-table``: the paper's table (accuracy per language, CALM's
consistency as its script scores it and ours) on hand-computed cases."""

from __future__ import annotations

import pytest

from calm_rag.cli import main
from calm_rag.datasets.samples import write_samples
from calm_rag.errors import InputError
from calm_rag.evaluation.calm_consistency import paper_row, paper_rows, paper_sources
from calm_rag.records import Question, Sample
from calm_rag.vote.answers import DEFAULT_CHAIN, extract_samples

MARKERS = {"en": "Answer:", "zh": "答案:", "fr": "Réponse:"}
OPTIONS = {"A": "town", "B": "school", "C": "hospital", "D": "office"}

# Three questions in en, zh, fr, one response each. In q3 English writes "(A)": our chain
# reads A, CALM's script reads "(" and drops it (so zh and fr agree alone).
#   CALM's rows: q1 C C A -> 1/3, q2 B B B -> 1, q3 ( B B -> B B -> 1: mean 7/9
#   ours:        q1 1/3,           q2 1,          q3 A B B -> 1/3:     mean 5/9
#   accuracy: en C B A vs C B B -> 2/3, zh 3/3, fr A B B -> 2/3; their mean 7/9
RESPONSES = {"q1": ("C", {"en": "C", "zh": "C", "fr": "A"}),
             "q2": ("B", {"en": "B", "zh": "B", "fr": "B"}),
             "q3": ("B", {"en": "(A)", "zh": "B", "fr": "B"})}


def responses(table: dict, setting: str = "zero-shot", options: dict = OPTIONS
              ) -> list[Sample]:
    """Samples of ``{qid: (gold, {lang: answer or [answers]})}``, each language's text ending
    in its own marker and the answer, extracted by the standard chain."""
    samples = []
    for qid, (gold, by_lang) in table.items():
        for lang, answers in by_lang.items():
            question = Question(id=qid, lang=lang, stem=f"{qid} in {lang}", options=options,
                                answer=gold)
            for k, answer in enumerate([answers] if isinstance(answers, str) else answers):
                samples.append(Sample(question=question, index=k, setting=setting,
                                      text=f"Explanation: why.\n{MARKERS[lang]} {answer}"))
    return extract_samples(samples, DEFAULT_CHAIN)


def test_row_has_the_hand_computed_figures():
    row = paper_row("before", responses(RESPONSES), None)
    assert row.variant == "medqa"  # en, zh, fr: the script's MedQA function
    assert row.samples_per_question == 1
    assert row.calm["value"] == pytest.approx(7 / 9) and row.calm["n"] == 3
    assert row.ours["consistency"]["value"] == pytest.approx(5 / 9)
    accuracy = {lang: a["value"] for lang, a in row.ours["accuracy"].items()}
    assert accuracy == pytest.approx({"en": 2 / 3, "zh": 1.0, "fr": 2 / 3})


def test_five_options_are_scored_by_the_xcsqa_function():
    # X-CSQA in en, zh, fr: E is an option. xcsqa: E E A -> 1/3; the medqa function (A-D)
    # would drop the first E and skip the second, leaving E A -> 0.
    five = {"q1": ("E", {"en": "E", "zh": "E", "fr": "A"})}
    row = paper_row("before", responses(five, options=OPTIONS | {"E": "park"}), None)
    assert row.variant == "xcsqa" and row.calm["value"] == pytest.approx(1 / 3)
    assert paper_row("before", responses(five, options=OPTIONS | {"E": "park"}),
                     "medqa").calm["value"] == 0.0


def test_several_samples_average_the_kth_sets():
    # k=0: en A, fr A -> 1; k=1: en A, fr B -> 0: CALM's row 1/2. Ours reads each language's
    # majority (fr: A and B tie, the first wins): A and A agree -> 1.
    two = {"q1": ("A", {"en": ["A", "A"], "fr": ["A", "B"]})}
    row = paper_row("before", responses(two), "medqa")
    assert row.samples_per_question == 2
    assert row.calm["value"] == pytest.approx(0.5)
    assert row.ours["consistency"]["value"] == pytest.approx(1.0)
    assert row.ours["accuracy"]["fr"]["value"] == pytest.approx(0.5)


def test_a_missing_language_or_a_repeated_sample_is_refused():
    gaps = {"q1": ("A", {"en": "A", "zh": "A", "fr": "A"}), "q2": ("A", {"en": "A", "zh": "A"})}
    with pytest.raises(InputError, match="question q2 has no sample in fr"):
        paper_row("before", responses(gaps), "medqa")
    twice = responses(RESPONSES)
    with pytest.raises(InputError, match="question q1 has sample 0 in en twice"):
        paper_row("before", [*twice, twice[0]], None)


def test_settings_are_rows_of_their_own():
    samples = responses(RESPONSES) + responses(RESPONSES | {"q1": ("C", {
        "en": "C", "zh": "C", "fr": "C"})}, setting="rag")
    rows = paper_rows([("heldout/before", samples)])
    assert [r.label for r in rows] == ["heldout/before, zero-shot", "heldout/before, rag"]
    assert rows[1].calm["value"] == pytest.approx(1.0)  # q1 1, q2 1, q3 1
    assert rows[1].ours["consistency"]["value"] == pytest.approx(7 / 9)  # 1, 1, 1/3


def test_command_reads_a_run_folder_before_then_after(tmp_path, capsys):
    after = RESPONSES | {"q1": ("C", {"en": "C", "zh": "C", "fr": "C"})}
    write_samples(tmp_path / "eval" / "heldout-after.jsonl", responses(after))
    write_samples(tmp_path / "eval" / "heldout-before.jsonl", responses(RESPONSES))
    assert [label for label, _ in paper_sources(tmp_path)] == ["heldout/before",
                                                               "heldout/after"]
    one = tmp_path / "eval" / "heldout-after.jsonl"
    assert paper_sources(one) == [("heldout/after", one)]  # never read as "before"
    assert main(["metrics", str(tmp_path), "--paper-table"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| phase | questions x samples | en | zh | fr | mean accuracy")
    before, after = (line.split(" | ") for line in lines[1:])
    assert before[:3] == ["| heldout/before", "3 x 1", "66.7 [0.0, 100.0]"]
    assert before[5:] == ["77.8", before[6], before[7]]
    assert before[6].startswith("77.8 [") and before[7].startswith("55.6 [")
    assert after[0] == "| heldout/after" and after[5] == "88.9"  # fr now 3/3
    assert after[6].startswith("100.0") and after[7].startswith("77.8 [")


def test_command_says_when_there_is_no_after(tmp_path, capsys):
    write_samples(tmp_path / "samples.jsonl", responses(RESPONSES))
    assert main(["metrics", str(tmp_path / "samples.jsonl"), "--paper-table"]) == 0
    out = capsys.readouterr().out
    assert "| before | 3 x 1 |" in out
    assert "after: no samples of an aligned model" in out
