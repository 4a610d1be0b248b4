"""Question sources as data: CALM's parallel files, the XCSR and MedQA releases, the alignment
check and ``calm-rag run --check``. The hub layouts are in test_sources_hub.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.config import from_mapping
from calm_rag.datasets.entry import gold_label, inline_options
from calm_rag.errors import InputError
from calm_rag.experiment import DataConfig, load_experiment
from calm_rag.pipeline.questions import check_questions, load_questions, split_questions
from tests.helpers import CALM_MEDQA, SHARED

OPTIONS = ["home", "school", "hospital", "office"]


def data(**keys) -> DataConfig:
    keys.setdefault("train", 1)
    keys.setdefault("heldout", 0)
    return from_mapping(DataConfig, keys)


def alpaca(stem: str, gold: str, options: list[str] = OPTIONS, style: str = "({}) {}") -> dict:
    lines = "\n".join(style.format(chr(65 + i), text) for i, text in enumerate(options))
    return {"instruction": "Think step by step.", "input": f"{stem}\n{lines}",
            "output": f"({gold}) {options[ord(gold) - 65]}"}


def write_calm_medqa(folder: Path, rows: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = {"en": "native_en", "zh": "en2cn", "fr": "en2fr"}
    for lang, items in rows.items():
        (folder / f"all_test_{names[lang]}.json").write_text(
            json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


STEMS = ["Where do you sleep?", "Who teaches pupils?", "What heals the sick?",
         "Which place has desks and clerks?", "Where is a bed found?", "Who learns there?"]


def parallel_rows(n: int = 6) -> dict[str, list[dict]]:
    golds = "ABCDAB"
    return {lang: [alpaca(f"{lang}: {STEMS[i]}", golds[i]) for i in range(n)]
            for lang in ("en", "zh", "fr")}


def test_inline_options_and_calm_outputs():
    stem, options = inline_options("Question: Where?\n(A) home\n(B) school\nAnswer:")
    assert stem == "Where?" and options == {"A": "home", "B": "school"}
    stem, options = inline_options("Wo?\nA. Haus\nB. Wald\n\nAntwort:")
    assert options == {"A": "Haus", "B": "Wald"}
    zika = {"A": "x", "B": "y", "C": "z", "D": "寨卡病毒"}
    assert gold_label("(d) 寨卡病毒", zika, "output") == "D"
    assert gold_label(2, {"A": "x", "B": "y", "C": "z"}, "answer") == "C"
    assert gold_label("y", {"A": "x", "B": "y"}, "answer") == "B"
    with pytest.raises(InputError, match="neither an option label"):
        gold_label("(E) w", {"A": "x", "B": "y"}, "output")


def test_calm_medqa_files_load_parallel_by_position(tmp_path):
    folder = write_calm_medqa(tmp_path / "medqa", parallel_rows())
    questions = load_questions(data(source="calm-medqa", path=str(folder),
                                    languages=["en", "zh", "fr"]), tmp_path)
    assert len(questions) == 18
    first = [q for q in questions if q.id == "calm-medqa-00003"]
    assert {q.lang for q in first} == {"en", "zh", "fr"} and {q.answer for q in first} == {"D"}
    assert first[0].options == dict(zip("ABCD", OPTIONS, strict=True))


def test_a_drifting_file_stops_on_its_first_misaligned_row(tmp_path):
    rows = parallel_rows()
    rows["zh"].insert(2, dict(rows["zh"][1]))  # a repeated row shifts every row after it
    folder = write_calm_medqa(tmp_path / "medqa", rows)
    config = data(source="calm-medqa", path=str(folder), languages=["en", "zh", "fr"])
    with pytest.raises(InputError) as err:
        load_questions(config, tmp_path)
    message = str(err.value)
    assert "all_test_en2cn.json:" in message and "row 3 (zh)" in message
    assert "repeats row 2" in message and "misaligned: drop" in message
    resynced = check_questions(data(source="calm-medqa", path=str(folder),
                                    languages=["en", "zh", "fr"], misaligned="drop"), tmp_path)
    assert resynced.parallel == 6  # the repeat removed, every row after it lines up again
    assert [(d.lang, d.rows, d.resynced) for d in resynced.dropped] == [("zh", 1, True)]
    assert "all_test_en2cn.json:" in resynced.dropped[0].first
    zh = {q.id: q for q in resynced.questions if q.lang == "zh"}
    en = {q.id: q for q in resynced.questions if q.lang == "en"}
    assert all(zh[i].answer == en[i].answer for i in en)


def test_a_drifting_file_with_an_inserted_row_lines_up_again(tmp_path):
    rows = parallel_rows()
    rows["zh"].insert(2, dict(rows["zh"][4]))  # an extra row, not a repeat of its neighbour
    folder = write_calm_medqa(tmp_path / "medqa", rows)
    checked = check_questions(data(source="calm-medqa", path=str(folder),
                                   languages=["en", "zh", "fr"], misaligned="drop"), tmp_path)
    assert checked.parallel == 6  # lined up by content: the rows after it are not lost
    assert [(d.lang, d.rows, d.resynced, d.kind, d.numbers) for d in checked.dropped] == [
        ("zh", 1, True, "inserted", [3])]
    zh = {q.id: q.stem for q in checked.questions if q.lang == "zh"}
    assert zh["calm-medqa-00002"] == f"zh: {STEMS[2]}"


def test_other_gold_or_option_count_is_misaligned(tmp_path):
    rows = parallel_rows()
    rows["fr"][4] = alpaca(f"fr: {STEMS[4]}", "C")  # gold A in en
    rows["zh"][1] = alpaca(f"zh: {STEMS[1]}", "B", OPTIONS[:3])
    folder = write_calm_medqa(tmp_path / "medqa", rows)
    with pytest.raises(InputError, match=r"en2cn.json:\d+: row 2 \(zh\).*3 options, but 4 in en"):
        load_questions(data(source="calm-medqa", path=str(folder),
                            languages=["en", "zh", "fr"]), tmp_path)
    checked = check_questions(data(source="calm-medqa", path=str(folder),
                                   languages=["en", "zh", "fr"], misaligned="drop"), tmp_path)
    assert checked.parallel == 4
    assert {d.lang: d.rows for d in checked.dropped} == {"zh": 1, "fr": 1}
    assert "gold answer C, but A in en" in checked.dropped[1].first
    kept = {q.id for q in checked.questions}
    assert "calm-medqa-00001" not in kept and "calm-medqa-00004" not in kept


def test_a_badly_translated_row_is_misaligned_not_fatal(tmp_path):
    rows = parallel_rows()
    broken = alpaca(f"fr: {STEMS[2]}", "C")
    broken["input"] = broken["input"].replace("(C) hospital", "(Chôpital")
    rows["fr"][2] = broken
    folder = write_calm_medqa(tmp_path / "medqa", rows)
    config = data(source="calm-medqa", path=str(folder), languages=["en", "zh", "fr"])
    with pytest.raises(InputError, match=r"en2fr.json:\d+: row 3 \(fr\).*(unreadable|options)"):
        load_questions(config, tmp_path)
    checked = check_questions(data(source="calm-medqa", path=str(folder),
                                   languages=["en", "zh", "fr"], misaligned="drop"), tmp_path)
    assert checked.parallel == 5


def test_calm_xcsqa_reference_files(calm_reference):
    folder = calm_reference / "test"
    checked = check_questions(data(source="calm-xcsqa", path=str(folder)), ".")
    assert checked.parallel == 100 and not checked.dropped
    en = [q for q in checked.questions if q.lang == "en"]
    assert en[0].stem == "Where off the eastern U.S. would you find an anemone?"
    assert len(en[0].options) == 5 and en[0].answer == "B"


def test_xcsr_release_layout_with_jap_folder(tmp_path):
    root = tmp_path / "X-CSQA"
    for code, lang in (("en", "en"), ("jap", "ja")):
        (root / code).mkdir(parents=True)
        rows = [{"id": f"q{i}", "lang": code, "question": {"stem": f"{lang} {i}", "choices": [
            {"label": "A", "text": "x"}, {"label": "B", "text": "y"}]}, "answerKey": "AB"[i % 2]}
            for i in range(3)]
        (root / code / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = load_questions(data(source="xcsqa", path=str(root), languages=["en", "ja"]),
                               tmp_path)
    assert sorted({q.lang for q in questions}) == ["en", "ja"] and len(questions) == 6
    with pytest.raises(InputError, match=r"X-CSQA/fr/dev.jsonl: field 'data.path': no xcsqa"):
        load_questions(data(source="xcsqa", path=str(root), languages=["en", "fr"]), tmp_path)


def medqa_release(tmp_path: Path) -> Path:
    root = tmp_path / "data_clean"
    for region, stem in (("US", "Which vitamin?"), ("Mainland", "哪种维生素？")):
        folder = root / "questions" / region / "4_options"
        folder.mkdir(parents=True)
        row = {"question": stem, "options": {"A": "C", "B": "D", "C": "K", "D": "B12"},
               "answer": "K", "answer_idx": "C", "meta_info": "step1"}
        (folder / "phrases_no_exclude_test.jsonl").write_text(json.dumps(row) + "\n")
    return root


def test_medqa_release_loads_one_region_and_refuses_to_vote_across(tmp_path):
    root = medqa_release(tmp_path)
    zh = load_questions(data(source="medqa-release", path=str(root), languages=["zh"]), tmp_path)
    assert zh[0].stem == "哪种维生素？" and zh[0].answer == "C"
    with pytest.raises(InputError, match="different questions in each language"):
        load_questions(data(source="medqa-release", path=str(root), languages=["en", "zh"]),
                       tmp_path)
    taiwan = root / "questions" / "Taiwan"
    taiwan.mkdir()
    (taiwan / "test.jsonl").write_text(json.dumps({"question": "哪種維生素？", "options": {
        "A": "C", "B": "K"}, "answer_idx": "B"}) + "\n")
    (tw,) = load_questions(data(source="medqa-taiwan", path=str(root), languages=["zh-tw"]),
                           tmp_path)
    assert tw.answer == "B" and tw.lang == "zh-hant"  # traditional Chinese, not zh
    with pytest.raises(InputError, match="medqa-taiwan has no zh questions"):
        load_questions(data(source="medqa-taiwan", path=str(root), languages=["zh"]), tmp_path)
    with pytest.raises(InputError, match="field 'data.languages': medqa-release has no fr"):
        load_questions(data(source="medqa-release", path=str(root), languages=["fr"]), tmp_path)
    # The release's English and simplified Chinese translations of the Taiwan set line up
    # with it, row by row: three languages of one question.
    for code, stem in [("en", "Which vitamin?"), ("zh", "哪种维生素？")]:
        (taiwan / "tw_translated_jsonl" / code).mkdir(parents=True)
        (taiwan / "tw_translated_jsonl" / code / f"test-2{code}.jsonl").write_text(json.dumps(
            {"question": stem, "options": {"A": "C", "B": "K"}, "answer_idx": "B"}) + "\n")
    three = load_questions(data(source="medqa-taiwan-translated", path=str(root),
                                languages=["zh-hant", "en", "zh"]), tmp_path)
    assert {(q.lang, q.stem, q.answer) for q in three} == {
        ("zh-hant", "哪種維生素？", "B"), ("en", "Which vitamin?", "B"),
        ("zh", "哪种维生素？", "B")}
    assert len({q.id for q in three}) == 1  # one question in three languages


def test_wrong_column_names_the_file_line_and_field(tmp_path):
    folder = write_calm_medqa(tmp_path / "medqa", parallel_rows())
    entry = {"loader": "json", "path": "all_test_{lang}.json", "codes": {"en": "native_en"},
             "stem": "question", "options_in_stem": True, "answer": "output"}
    config = data(source="mine", path=str(folder), languages=["en"], entry=entry)
    with pytest.raises(InputError, match=r"all_test_native_en.json:2: field 'question': missing"):
        load_questions(config, tmp_path)


def test_by_id_sources_compare_gold_and_options(tmp_path):
    rows = {"en": [("q1", "A"), ("q2", "B"), ("q3", "A")], "fr": [("q2", "B"), ("q1", "B")]}
    for lang, items in rows.items():
        (tmp_path / f"{lang}.jsonl").write_text("".join(json.dumps(
            {"qid": qid, "q": f"{lang} {qid}", "opts": {"A": "x", "B": "y"}, "gold": gold}) + "\n"
            for qid, gold in items))
    entry = {"path": "{lang}.jsonl", "id": "qid", "parallel": "id", "stem": "q",
             "options": ["opts"], "answer": "gold"}
    with pytest.raises(InputError, match=r"fr.jsonl:2: question 'q1' \(fr\).*gold answer B"):
        load_questions(data(source="mine", path=str(tmp_path), entry=entry,
                            languages=["en", "fr"]), tmp_path)
    checked = check_questions(data(source="mine", path=str(tmp_path), entry=entry,
                                   languages=["en", "fr"], misaligned="drop"), tmp_path)
    assert checked.parallel == 1 and checked.unmatched == 1
    assert sorted(q.lang for q in checked.questions) == ["en", "fr"]


def test_entry_checks_name_the_key():
    with pytest.raises(InputError, match="field 'data.entry.id': parallel: id needs"):
        from_mapping(DataConfig, {"data": {}}["data"] | {"entry": {"parallel": "id"}},
                     prefix="data")
    with pytest.raises(InputError, match="data.entry.name"):
        from_mapping(DataConfig, {"entry": {"loader": "hub"}}, prefix="data")
    with pytest.raises(InputError, match="data.misaligned.*not allowed"):
        from_mapping(DataConfig, {"misaligned": "ignore"}, prefix="data")


def test_entry_written_in_the_experiment_yaml_and_check(tmp_path, capsys):
    folder = write_calm_medqa(tmp_path / "calm", parallel_rows())
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        "name: mine\n"
        "data:\n"
        "  source: my-medqa\n"
        "  path: calm\n"
        "  languages: [en, fr]\n"
        "  entry:\n"
        "    loader: json\n"
        "    path: all_test_{lang}.json\n"
        "    codes: {en: native_en, fr: en2fr}\n"
        "    stem: input\n"
        "    options_in_stem: true\n"
        "    answer: output\n"
        "  train: 4\n"
        "  heldout: 2\n"
        "retrieval: {enabled: false}\n"
        "generator: {backend: openai, model: served}\n")
    assert folder.is_dir() and load_experiment(experiment).data.entry is not None
    assert main(["run", str(experiment), "--check"]) == 0
    out = capsys.readouterr().out
    assert "en: 6 rows" in out and "6 questions line up" in out
    assert "no model or index was loaded" in out
    assert main(["run", str(experiment), "--check", "--set", "data.train=9"]) == 2
    assert "data.train" in capsys.readouterr().err


def test_bundled_sources_are_checked_by_id():
    checked = check_questions(data(source="bundled", dataset="commonsense"), ".")
    assert checked.parallel >= 30 and not checked.dropped and not checked.unmatched
    split = split_questions(checked.questions, data(source="bundled", train=4, heldout=2))
    assert len(split["train"]) == 4 * 6


@pytest.mark.skipif(not CALM_MEDQA.is_dir(), reason="CALM's released data is not beside the "
                    "project (a user's clone has no ../shared)")
def test_calm_medqa_pipeline_check_names_the_drift(capsys):
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "calm-medqa.yaml"
    assert main(["run", str(pipeline), "--check"]) == 2
    err = capsys.readouterr().err
    assert "all_test_en2cn.json:1492: row 299 (zh)" in err and "repeats row 298" in err
    assert main(["run", str(pipeline), "--check", "--set", "data.misaligned=drop"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 duplicated rows of zh" in out and "996 questions line up" in out


@pytest.mark.skipif(not (SHARED / "calm-reference" / "xcsqa" / "test").is_dir(),
                    reason="CALM's released data is not beside the project")
def test_calm_xcsqa_pipeline_checks_clean(capsys):
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "calm-xcsqa.yaml"
    assert main(["run", str(pipeline), "--check"]) == 0
    out = capsys.readouterr().out
    assert "ja: 100 rows" in out and "x_csqa_cn_test.json" in out
    assert "100 questions line up in every language" in out
