"""One model's (or run's) samples per vote: a folder holding several groups of CALM sample
files is refused unless one is chosen, by group name or file pattern; and samples whose
question ids line up in no other language are refused (partly: a warning with the count)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.datasets.calm import read_calm_entries, read_calm_samples
from calm_rag.datasets.samples import read_samples, write_samples
from calm_rag.errors import InputError
from tests.helpers import make_samples

LLAMA = "x_csqa_train_sampled"
MISTRAL = "x_csqa_train_mistral_sampled"


def item(stem: str, pred: list[str], gold: str = "B") -> dict:
    return {"instruction": "Answer.", "input": f"{stem}\nA. one\nB. two\nC. three",
            "output": gold, "pred": pred}


def write_group(folder: Path, model: str, langs: tuple[str, ...], n_items: int) -> None:
    """``x_csqa_<lang>_train[_<model>]_sampled.json`` with ``n_items`` items, 2 responses
    each saying the model's name (so a test can tell whose samples it read)."""
    folder.mkdir(exist_ok=True)
    infix = f"_{model}" if model else ""
    for lang in langs:
        items = [item(f"Q{i} {lang}", [f"{model or 'llama'} Answer: B"] * 2)
                 for i in range(n_items)]
        path = folder / f"x_csqa_{lang}_train{infix}_sampled.json"
        path.write_text(json.dumps(items), encoding="utf-8")


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two groups in one folder: Llama's 2 items and Mistral's 3, in en and cn."""
    folder = tmp_path / "mixed"
    write_group(folder, "", ("en", "cn"), 2)
    write_group(folder, "mistral", ("en", "cn"), 3)
    return folder


def test_a_folder_of_two_groups_is_refused_naming_both(mixed):
    with pytest.raises(InputError) as caught:
        read_samples(mixed)
    message = str(caught.value)
    assert message.startswith(f"{mixed}: holds the sample files of 2 groups")
    assert (f"{MISTRAL} (x_csqa_{{cn,en}}_train_mistral_sampled.json); "
            f"{LLAMA} (x_csqa_{{cn,en}}_train_sampled.json)") in message
    assert "--group" in message and "'x_csqa_*_train_mistral_sampled.json'" in message
    for read in (read_calm_samples, read_calm_entries):
        with pytest.raises(InputError, match="2 groups"):
            read(mixed)


@pytest.mark.parametrize("group, n_questions, said", [
    (MISTRAL, 3, "mistral"), (LLAMA, 2, "llama"),
    ("x_csqa_*_train_sampled.json", 2, "llama"),
    ("x_csqa_*_train_mistral_sampled.json", 3, "mistral"),
])
def test_a_group_is_chosen_by_name_or_pattern(mixed, group, n_questions, said):
    for read in (read_samples, read_calm_samples):
        samples = read(mixed, group=group)
        assert len({s.question.id for s in samples}) == n_questions
        assert len(samples) == n_questions * 2 * 2  # 2 languages, 2 responses each
        assert {s.lang for s in samples} == {"en", "zh"}
        assert {s.text.split()[0] for s in samples} == {said}


def test_a_choice_must_match_one_group(mixed):
    with pytest.raises(InputError, match=rf"field 'group': no CALM sample file of group or "
                                         rf"pattern 'gpt' \(groups here: {MISTRAL}, {LLAMA}\)"):
        read_samples(mixed, group="gpt")
    with pytest.raises(InputError, match="field 'group': holds the sample files of 2 groups"):
        read_samples(mixed, group="x_csqa_*.json")  # a pattern over both groups


def test_one_group_reads_as_before_and_a_file_is_its_own_group(tmp_path):
    write_group(tmp_path, "", ("en", "fr", "cn"), 4)
    assert len({s.question.id for s in read_samples(tmp_path)}) == 4
    assert len(read_samples(tmp_path, group=LLAMA)) == 4 * 3 * 2
    one = tmp_path / "x_csqa_fr_train_sampled.json"
    assert len(read_samples(one, group=LLAMA)) == 4 * 2
    with pytest.raises(InputError, match=rf"{one.name}: field 'group': no CALM sample file"):
        read_samples(one, group=MISTRAL)


def test_a_group_for_a_samples_jsonl_is_refused(tmp_path):
    write_samples(tmp_path / "s.jsonl", make_samples({"en": ["C"], "fr": ["C"]}))
    with pytest.raises(InputError, match="field 'group': a group chooses among CALM"):
        read_samples(tmp_path / "s.jsonl", group=LLAMA)


@pytest.mark.parametrize("command, expected", [
    ("metrics", "### zero-shot (3 questions)"),
    ("vote", "3 questions, "),
    ("study", "3 questions, languages en, zh"),
])
def test_commands_refuse_the_mixed_folder_and_take_the_group(mixed, tmp_path, capsys,
                                                            command, expected):
    argv = {"metrics": ["metrics", str(mixed)],
            "vote": ["vote", str(mixed), "--out", str(tmp_path / "out")],
            "study": ["study", "votes", str(mixed)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 groups" in err and f"calm-rag {command}: error" in err
    assert main([*argv, "--group", MISTRAL]) == 0
    assert expected in capsys.readouterr().out
    assert main([*argv, "--group", "nope"]) == 2
    assert "field '--group': no CALM sample file" in capsys.readouterr().err


def test_export_says_a_sample_folder_is_not_pairs(mixed, tmp_path, capsys):
    assert main(["export", str(mixed), "--format", "trl", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pairs.jsonl" in err and "calm-rag vote" in err


def test_ids_that_line_up_in_no_language_are_refused(tmp_path):
    samples = (make_samples({"en": ["C"]}, qid="en-1") + make_samples({"fr": ["C"]}, qid="fr-1")
               + make_samples({"en": ["A"]}, qid="en-2") + make_samples({"fr": ["A"]}, qid="fr-2"))
    write_samples(tmp_path / "s.jsonl", samples)
    with pytest.raises(InputError, match=r"s\.jsonl: field 'question.id': no question id appears "
                                         r"in more than one language \(4 ids over en, fr"):
        read_samples(tmp_path / "s.jsonl")


def test_ids_that_line_up_partly_are_counted_in_a_warning(tmp_path, caplog):
    samples = (make_samples({"en": ["C"], "fr": ["C"]}, qid="q1")
               + make_samples({"en": ["A"], "fr": ["B"]}, qid="q2")
               + make_samples({"en": ["A"]}, qid="q3"))
    write_samples(tmp_path / "s.jsonl", samples)
    with caplog.at_level(logging.WARNING):
        assert len(read_samples(tmp_path / "s.jsonl")) == 5
    assert "1 of 3 questions are in one language only (e.g. 'q3' only in en)" in caplog.text
    caplog.clear()
    write_samples(tmp_path / "one.jsonl", make_samples({"en": ["C"]}, qid="q1")
                  + make_samples({"en": ["A"]}, qid="q2"))
    with caplog.at_level(logging.WARNING):
        read_samples(tmp_path / "one.jsonl")  # one language: nothing to line up
    assert caplog.text == ""


def test_the_authors_two_models_in_one_folder(calm_reference, tmp_path, capsys):
    folder = tmp_path / "both"
    folder.mkdir()
    for path in sorted((calm_reference / "samples").glob("*.json")):
        shutil.copy(path, folder / path.name)
        shutil.copy(path, folder / path.name.replace("_train_sampled", "_train_mistral_sampled"))
    assert main(["metrics", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{MISTRAL} (x_csqa_{{cn,de,en,fr,it,ja}}_train_mistral_sampled.json)" in err
    assert main(["metrics", str(folder), "--group", LLAMA]) == 0
    assert "### zero-shot (899 questions)" in capsys.readouterr().out
    assert len({s.question.id for s in read_samples(folder, group="x_csqa_*_train_sampled.json")
                }) == 899
