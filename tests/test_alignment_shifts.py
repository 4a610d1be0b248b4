"""Files parallel by position, lined up by content: a removed, inserted or repeated row is found,
the rows after it line up again, and what cannot be placed is dropped and named. Also the
sources joined by id: ids that line up in no other language are refused, unmatched ids named."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from calm_rag.config import from_mapping
from calm_rag.datasets.lineup import align_questions
from calm_rag.datasets.row_match import match_rows
from calm_rag.errors import InputError
from calm_rag.experiment import DataConfig
from calm_rag.pipeline.questions import check_questions, load_questions
from calm_rag.records import Question

GOLDS = "ACBDDBACCABD"
_NAMES = {"en": "native_en", "zh": "en2cn", "fr": "en2fr"}


def data(**keys) -> DataConfig:
    keys.setdefault("train", 1)
    keys.setdefault("heldout", 0)
    keys.setdefault("source", "calm-medqa")
    keys.setdefault("languages", ["en", "fr"])
    return from_mapping(DataConfig, keys)


def case(k: int) -> dict[str, tuple[str, list[str]]]:
    """Question ``k`` in English and French: an age, a dose, a lab value and a drug name, as
    MedQA stems have them (the French writes decimals with a comma)."""
    age, dose, sodium, drug = 21 + 7 * k, 5 * (k + 3), 120 + 3 * k, f"Zolvaprex{chr(97 + k)}"
    en = (f"A {age}-year-old man takes {dose} mg of {drug} daily. Serum sodium is {sodium} "
          f"mEq/L and potassium {k + 2}.{k} mEq/L. What is the next step?")
    fr = (f"Un homme de {age} ans prend {dose} mg de {drug}e par jour. Le sodium sérique est de "
          f"{sodium} mEq/L et le potassium de {k + 2},{k} mEq/L. Quelle est la prochaine étape ?")
    options = [f"{dose + n} mg" for n in (10, 20, 30, 40)]
    return {"en": (en, options), "fr": (fr, options)}


def alpaca(stem: str, options: list[str], gold: str) -> dict:
    lines = "\n".join(f"({chr(65 + n)}) {text}" for n, text in enumerate(options))
    return {"instruction": "Think step by step.", "input": f"{stem}\n{lines}",
            "output": f"({gold}) {options[ord(gold) - 65]}"}


def rows(lang: str, n: int = 12) -> list[dict]:
    return [alpaca(*case(k)[lang], GOLDS[k % len(GOLDS)]) for k in range(n)]


def write(folder: Path, files: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang, items in files.items():
        (folder / f"all_test_{_NAMES[lang]}.json").write_text(
            json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


def line_of(folder: Path, lang: str, row: int) -> int:
    """The line a row (from 1) starts on, as json.dumps(indent=1) writes the file."""
    items = json.loads((folder / f"all_test_{_NAMES[lang]}.json").read_text(encoding="utf-8"))
    return 2 + sum(len(json.dumps(item, ensure_ascii=False, indent=1).splitlines())
                   for item in items[:row - 1])


def kept_pairs(checked) -> dict[str, str]:
    """Each kept question's id → the French stem kept beside its English one, checked to be
    that English question's translation (same age, same drug)."""
    en = {q.id: q.stem for q in checked.questions if q.lang == "en"}
    fr = {q.id: q.stem for q in checked.questions if q.lang == "fr"}
    assert en.keys() == fr.keys()
    for qid, stem in en.items():
        age = stem.split("-year-old")[0].split()[-1]
        assert f"de {age} ans" in fr[qid], (qid, stem, fr[qid])
    return fr


def drops(checked) -> list[tuple[str, str, bool, list[int]]]:
    return [(d.lang, d.kind, d.resynced, d.numbers) for d in checked.dropped]


def ids(*rows_kept: int) -> set[str]:
    return {f"calm-medqa-{k:05d}" for k in rows_kept}


def test_identical_files_line_up_by_position_without_the_alignment(tmp_path):
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": rows("fr")})
    checked = check_questions(data(path=str(folder), misaligned="drop"), tmp_path)
    assert checked.parallel == 12 and checked.dropped == []
    assert set(kept_pairs(checked)) == ids(*range(12))
    mine = [q for q in checked.questions if q.lang == "fr"]
    ref = [q for q in checked.questions if q.lang == "en"]
    assert match_rows(mine, ref).shifted is False  # every row most like its own place


def test_a_removed_row_with_one_appended_shifts_nothing_after_it(tmp_path):
    fr = rows("fr", 13)
    fr = fr[:4] + fr[5:]  # row 5 removed, question 13 (not in en) appended: 12 rows again
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": fr})
    checked = check_questions(data(path=str(folder), misaligned="drop"), tmp_path)
    assert checked.parallel == 11
    assert set(kept_pairs(checked)) == ids(0, 1, 2, 3, *range(5, 12))
    assert drops(checked) == [("fr", "inserted", True, [12]), ("fr", "missing", False, [5])]
    with pytest.raises(InputError) as err:
        load_questions(data(path=str(folder)), tmp_path)
    assert str(err.value) == (
        f"{folder}/all_test_en2fr.json:{line_of(folder, 'fr', 5)}: row 5 (fr) is missing "
        f"(row 5 of {folder}/all_test_native_en.json has no translation here): the rows after "
        "it are shifted by one (fix the file, or set data.misaligned: drop to go on without "
        "the misaligned rows)")


def test_an_inserted_row_is_removed_from_its_language_alone(tmp_path):
    fr = rows("fr", 13)
    fr = fr[:6] + [fr[12]] + fr[6:12]  # question 13 inserted as row 7
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": fr})
    checked = check_questions(data(path=str(folder), misaligned="drop"), tmp_path)
    assert checked.parallel == 12 and set(kept_pairs(checked)) == ids(*range(12))
    assert drops(checked) == [("fr", "inserted", True, [7])]
    assert checked.dropped[0].describe() == (
        "removed 1 rows of fr that are in no other language (the rows after them line up "
        f"again), first {folder}/all_test_en2fr.json:{line_of(folder, 'fr', 7)}: row 7 (fr) "
        "is in no other language: the rows after it are shifted by one")
    with pytest.raises(InputError, match=r"en2fr.json:\d+: row 7 \(fr\) is in no other "
                                         r"language: the rows after it are shifted by one"):
        load_questions(data(path=str(folder)), tmp_path)


def test_a_duplicated_row_keeps_its_first_copy(tmp_path):
    fr = rows("fr")
    fr = fr[:9] + [dict(fr[8])] + fr[9:]  # row 9 twice
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": fr})
    checked = check_questions(data(path=str(folder), misaligned="drop"), tmp_path)
    assert checked.parallel == 12 and set(kept_pairs(checked)) == ids(*range(12))
    assert drops(checked) == [("fr", "duplicated", True, [10])]
    assert "removed 1 duplicated rows of fr" in checked.summary()[2]
    with pytest.raises(InputError, match=r"en2fr.json:\d+: row 10 \(fr\) repeats row 9: the "
                                         r"rows after it are shifted by one"):
        load_questions(data(path=str(folder)), tmp_path)


def test_a_missing_last_row_loses_that_question_only(tmp_path):
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": rows("fr")[:11]})
    checked = check_questions(data(path=str(folder), misaligned="drop"), tmp_path)
    assert checked.parallel == 11 and set(kept_pairs(checked)) == ids(*range(11))
    assert drops(checked) == [("fr", "missing", False, [12])]
    assert checked.summary()[2] == (
        f"  dropped 1 rows of en missing from fr (and their other translations), first "
        f"{folder}/all_test_en2fr.json:{line_of(folder, 'fr', 11)}: row 12 (fr) is missing (row "
        f"12 of {folder}/all_test_native_en.json has no translation here): fr ends before it")


def test_a_shifted_row_keeps_its_own_differences_named(tmp_path):
    fr = rows("fr")
    fr[7] = alpaca(*case(7)["fr"], "A")  # gold C in en: a bad translation, not a shift
    fr = fr[:2] + fr[3:]  # and row 3 missing: row 8 of en is row 7 of fr now
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": fr})
    checked = check_questions(data(path=str(folder), misaligned="drop"), tmp_path)
    assert checked.parallel == 10 and set(kept_pairs(checked)) == ids(0, 1, *range(3, 7),
                                                                      *range(8, 12))
    assert drops(checked) == [("fr", "missing", False, [3]), ("fr", "misaligned", False, [7])]
    assert checked.dropped[1].first.endswith(
        f"row 7 (fr) does not line up with row 8 of {folder}/all_test_native_en.json: gold "
        "answer A, but C in en")


ZH_ALIKE = ["哪个器官首先受累？", "哪种细胞最先变化？", "哪条神经最先受损？", "哪种组织最早改变？"]
EN_ALIKE = ["Which organ is affected first?", "Which cell type changes first?",
            "Which nerve is damaged first?!", "Which tissue is altered first?"]


def test_rows_that_cannot_be_placed_next_to_a_shift_are_dropped_and_named(tmp_path):
    # Rows 5-8: no numbers or names, one gold, one length each side: where the missing row
    # was cannot be told, so none of them is kept, and no pair is guessed.
    en, zh = [], []
    for k in range(12):
        if 4 <= k < 8:
            en.append(alpaca(EN_ALIKE[k - 4], [f"opt{'abcd'[k - 4]}{n}" for n in "wxyz"], "A"))
            zh.append(alpaca(ZH_ALIKE[k - 4], [f"选项{'甲乙丙丁'[k - 4]}{n}" for n in "子丑寅卯"],
                             "A"))
        else:
            stem, options = case(k)["en"]
            en.append(alpaca(stem, options, GOLDS[k]))
            zh.append(alpaca(f"一名 {21 + 7 * k} 岁男子每天服用 {5 * (k + 3)} mg Zolvaprex"
                             f"{chr(97 + k)}。", options, GOLDS[k]))
    folder = write(tmp_path / "calm", {"en": en, "zh": zh[:5] + zh[6:]})  # row 6 missing
    checked = check_questions(data(path=str(folder), languages=["en", "zh"],
                                   misaligned="drop"), tmp_path)
    kept = {q.id for q in checked.questions}
    assert kept == ids(0, 1, 2, 3, *range(8, 12)) and checked.parallel == 8
    # en row 5 named as the missing one, zh rows 5-7 (en rows 6-8) as placed without confidence
    assert [(d.kind, d.numbers) for d in checked.dropped] == [("missing", [5]),
                                                               ("uncertain", [5, 6, 7])]
    assert checked.dropped[1].first.endswith(
        "row 5 (zh) cannot be placed with confidence as row 6 of en: another row fits about "
        "as well; it is 1.5x longer than usual")


def test_the_check_names_what_was_resynced_and_dropped(tmp_path, capsys):
    from calm_rag.cli import main

    fr = rows("fr", 13)
    folder = write(tmp_path / "calm", {"en": rows("en"), "fr": fr[:4] + fr[5:]})
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("name: shifted\ndata:\n  source: calm-medqa\n  path: calm\n"
                          "  languages: [en, fr]\n  misaligned: drop\n  train: 4\n"
                          "  heldout: 2\nretrieval: {enabled: false}\n"
                          "generator: {backend: openai, model: served}\n")
    assert main(["run", str(experiment), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"removed 1 rows of fr that are in no other language (the rows after them line up " \
           f"again), first {folder}/all_test_en2fr.json:" in out
    assert "row 12 (fr) is in no other language: an extra row at the end" in out
    assert "row 5 (fr) is missing" in out and "11 questions line up in every language" in out
    assert main(["run", str(experiment), "--check", "--set", "data.misaligned=stop"]) == 2
    assert "row 5 (fr) is missing" in capsys.readouterr().err


def test_ids_in_no_other_language_are_refused():
    questions = [Question(id=f"{lang}-{k}", lang=lang, stem=f"{lang} {k}",
                          options={"A": "x", "B": "y"}, answer="A", source="mine")
                 for lang in ("en", "fr") for k in range(3)]
    with pytest.raises(InputError) as err:
        align_questions(questions, "data.source mine", "drop")
    assert str(err.value) == (
        "data.source mine (en): no question id in en (e.g. 'en-0') is in fr: its questions "
        "line up with no other language (a question's translations must share one id (check "
        "the id column, data.entry.id, and data.path))")


def test_an_entry_joined_by_id_names_its_source_when_no_id_is_shared(tmp_path):
    for lang in ("en", "fr"):
        (tmp_path / f"{lang}.jsonl").write_text("".join(json.dumps(
            {"qid": f"{lang}{k}", "q": f"{lang} {k}", "opts": {"A": "x", "B": "y"},
             "gold": "A"}) + "\n" for k in range(2)))
    entry = {"path": "{lang}.jsonl", "id": "qid", "parallel": "id", "stem": "q",
             "options": ["opts"], "answer": "gold"}
    with pytest.raises(InputError) as err:
        check_questions(data(source="mine", path=str(tmp_path), entry=entry), tmp_path)
    assert str(err.value).startswith(f"{tmp_path}/en.jsonl: no question id of mine in en "
                                     "(e.g. 'en0') is in fr: its questions line up with no "
                                     "other language (")


def test_unmatched_ids_are_named_in_the_check_and_the_log(caplog):
    questions = [Question(id=f"q{k}", lang=lang, stem=f"{lang} {k}", options={"A": "x", "B": "y"},
                          answer="A")
                 for lang, ks in (("en", range(8)), ("fr", range(2, 10))) for k in ks]
    checked = align_questions(questions, "data.source mine", "drop")
    assert checked.parallel == 6 and checked.unmatched == 4
    assert checked.summary()[-2] == (
        "  4 ids are missing from some language (not used): 'q0' (not in fr), 'q1' (not in "
        "fr), 'q8' (not in en), 'q9' (not in en)")
    from calm_rag.pipeline.questions import log_dropped

    with caplog.at_level(logging.WARNING, logger="calm_rag.pipeline.questions"):
        log_dropped(checked)
    assert "'q0' (not in fr)" in caplog.text


def _release_copy(source: Path, folder: Path, fr: list[dict]) -> Path:
    folder.mkdir()
    for name in ("all_test_native_en.json", "all_test_en2cn.json"):
        shutil.copy(source / name, folder / name)
    (folder / "all_test_en2fr.json").write_text(json.dumps(fr, ensure_ascii=False, indent=2),
                                                encoding="utf-8")
    return folder


def test_calm_medqa_release_with_a_shifted_french_file(calm_medqa, tmp_path):
    fr = json.loads((calm_medqa / "all_test_en2fr.json").read_text(encoding="utf-8"))
    config = {"languages": ["en", "zh", "fr"], "misaligned": "drop"}
    release = check_questions(data(path=str(calm_medqa), **config), tmp_path)
    # The release as it is: zh repeats its row 299; 1 zh and 3 fr rows have 3 options.
    assert release.parallel == 996
    assert drops(release) == [("zh", "duplicated", True, [299]),
                              ("zh", "misaligned", False, [711]),
                              ("fr", "misaligned", False, [455, 582, 647])]
    shifted = _release_copy(calm_medqa, tmp_path / "shifted", fr[:299] + fr[300:] + [fr[4]])
    checked = check_questions(data(path=str(shifted), **config), tmp_path)
    assert checked.parallel == 995  # the release's 996 less row 300, which fr lacks now
    assert drops(checked) == [("zh", "duplicated", True, [299]),
                              ("fr", "inserted", True, [1000]),
                              ("zh", "misaligned", False, [711]),
                              ("fr", "missing", False, [300]),
                              ("fr", "misaligned", False, [454, 581, 646])]
    assert {q.id for q in checked.questions} == {q.id for q in release.questions} - ids(299)
    short = _release_copy(calm_medqa, tmp_path / "short", fr[:-1])
    checked = check_questions(data(path=str(short), **config), tmp_path)
    assert checked.parallel == 995
    assert ("fr", "missing", False, [1000]) in drops(checked)
    with pytest.raises(InputError, match=r"en2fr.json:\d+: row 300 \(fr\) is missing .*shifted "
                                         r"by one"):
        check_questions(data(path=str(shifted), languages=["en", "fr"]), tmp_path)

