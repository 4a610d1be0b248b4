"""CALM's consistency score (calm_rag.evaluation.calm_consistency) against an independent port
of the authors' ``utils/get_consistency_score.py`` (tests/calm_consistency_oracle.py).

A seeded generator writes LLaMA-Factory prediction files in the MedQA and X-CSQA shapes, 2 to
6 languages, full of what trips the script: answers outside the options, several of them in a
row (the removal loop skips the one after each removed answer), nothing after the marker (the
script crashes there), no marker at all, other languages' markers, full-width colons,
backticks (removed by its MedQA variant only), markdown and blank predictions. Every set must
give the oracle's score exactly, not approximately.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.evaluation.calm_consistency import (
    CALM_MARKERS,
    VARIANTS,
    calm_consistency,
    default_variant,
    format_calm_consistency,
    prediction_files,
    script_survivors,
)
from tests import calm_consistency_oracle as oracle

SETS = 240
LANGS = ("en", "cn", "fr", "de", "ja", "it")  # the authors' codes
OURS = {"cn": "zh"}
PAYLOADS = ("A", "B", "C", "D", "E", "A", "B", "C", "D", "E", "F", "X", "a", "1", "(B)", "**C**",
            "`D`", "```A```", "BC", "答", "Ｂ", ".", "", " ", "\n", "E. park", "Aucune",
            "`", "``", "(", "选C")
SPACES = ("", " ", "  ", "\n", "\u3000", "\t", "\u00a0")
PROSE = ("Explanation: a town has schools. ", "解释:学校在城镇里。", "Let me think.\n", "",
         "Erklärung: Die Schule. ")


def prediction(rng: random.Random, lang: str) -> str:
    """One ``predict``: prose, then a marker (its own, another language's, full-width, none),
    then what a model puts after it; sometimes a second answer slot, or nothing at all."""
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.15:  # no marker: the script reads the first character of the whole text
        return rng.choice(PAYLOADS) + rng.choice(PROSE)
    marker = rng.choice([oracle.MARKERS[lang]] * 4 + list(oracle.MARKERS.values())
                        + ["答案：", "Answer :", "Réponse :"])
    text = rng.choice(PROSE) + marker + rng.choice(SPACES) + rng.choice(PAYLOADS)
    if rng.random() < 0.2:  # a second slot: the last one counts, even an empty one
        text += "\n" + oracle.MARKERS[lang] + rng.choice(("", " ", " B", "`C`"))
    return text


def stuck_row(rng: random.Random, langs: list[str]) -> dict[str, str]:
    """A row built to hit the removal loop: runs of equal answers outside the options."""
    bad = rng.choice(("X", "(", "*", "F", ""))
    return {lang: f"{oracle.MARKERS[lang]} {bad if rng.random() < 0.6 else rng.choice('ABCDE')}"
            for lang in langs}


def write_set(folder: Path, rng: random.Random) -> tuple[dict[str, Path], str]:
    """One prediction set: ``{authors' code: file}`` and the variant, files written."""
    variant = rng.choice(("medqa", "csqa"))
    langs = rng.sample(LANGS, rng.randint(2, 6))
    rows = [stuck_row(rng, langs) if rng.random() < 0.3 else
            {lang: prediction(rng, lang) for lang in langs} for _ in range(rng.randint(1, 8))]
    files = {}
    for lang in langs:
        path = folder / lang / "generated_predictions.jsonl"
        path.parent.mkdir(parents=True)
        lines = [json.dumps({"prompt": "...", "predict": row[lang], "label": ""},
                            ensure_ascii=False) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[lang] = path
    return files, variant


def test_generated_sets_agree_with_the_oracle_exactly(tmp_path):
    rng = random.Random(20250124)
    seen = {"medqa": 0, "csqa": 0, "kept outside the options": 0, "empty after a marker": 0,
            "under two left": 0}
    sizes = set()
    for k in range(SETS):
        folder = tmp_path / f"set{k}"
        files, variant = write_set(folder, rng)
        expected = oracle.consistency({lang: str(p) for lang, p in files.items()}, variant)
        # Half the sets named as the authors name languages (cn), half as we do (zh); a third
        # given as a folder of language subfolders, and our metrics computed beside (their
        # bootstrap intervals are slow).
        if k % 3 == 0:
            given = prediction_files([folder])
        else:
            given = prediction_files([f"{OURS.get(lang, lang) if k % 2 else lang}={path}"
                                      for lang, path in files.items()])
        result = calm_consistency(given, "medqa" if variant == "medqa" else "xcsqa",
                                  ours=k % 3 == 0)
        assert result.calm == expected, (k, files)
        assert result.calm == sum(result.per_row) / len(result.per_row)
        seen[variant] += 1
        sizes.add(len(files))
        _count_quirks(files, variant, seen)
    assert sizes == {2, 3, 4, 5, 6}
    assert seen["medqa"] + seen["csqa"] == SETS >= 200  # the issue asks for 200 at least
    assert all(n > 0 for n in seen.values()), seen  # every quirk was met, not just sampled
    print(f"{SETS} generated sets agreed with the oracle exactly: {seen}, "
          f"languages {sorted(sizes)}")  # pytest -s: the count the release note quotes


def _count_quirks(files: dict[str, Path], variant: str, seen: dict[str, int]) -> None:
    """Which of the script's quirks this set met (so the test shows it exercised them)."""
    letters = ["A", "B", "C", "D"] if variant == "medqa" else list("ABCDE")
    order = [lang for lang in oracle.CSQA_LANGS if lang in files]
    data = {lang: oracle.read_file(str(files[lang])) for lang in order}
    for i in range(len(data[order[0]])):
        preds = [data[lang][i]["predict"] for lang in order]
        if variant == "medqa":
            preds = [p.replace("`", "") for p in preds]
        keys = [oracle.get_ans_key(p, lang) for p, lang in zip(preds, order, strict=True)]
        left = list(keys)
        oracle.row_score(left, letters)
        seen["kept outside the options"] += any(k not in letters for k in left)
        seen["empty after a marker"] += "" in keys
        seen["under two left"] += len(left) < 2


def test_the_removal_loop_step_by_step():
    # The answer after a removed one is never looked at ...
    assert script_survivors(["X", "X", "A", "A"], "ABCD") == ["X", "A", "A"]
    # ... so of X, X, Y, X, B the first X goes, the second is skipped, Y goes, X is skipped:
    assert script_survivors(["X", "X", "Y", "X", "B"], "ABCD") == ["X", "X", "B"]
    # remove() takes the first equal answer, here the skipped X at 0 when the walk is at 2:
    assert script_survivors(["X", "X", "A", "X", "Y", "B"], "ABCD") == ["A", "X", "Y", "B"]
    assert script_survivors(["", "C", "C"], "ABCD") == ["C", "C"]
    for answers in (["X", "X", "A", "A"], ["X", "X", "Y", "X", "B"], ["", "", "", "A", "*"]):
        literal = list(answers)
        oracle.row_score(literal, ["A", "B", "C", "D"])
        assert script_survivors(answers, "ABCD") == literal


def write_predictions(folder: Path, rows: dict[str, list[str]],
                      labels: list[str] | None = None) -> dict[str, Path]:
    files = {}
    for lang, preds in rows.items():
        path = folder / f"{lang}.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"predict": p, "label": labels[i] if labels else ""},
                                           ensure_ascii=False) + "\n"
                                for i, p in enumerate(preds)), encoding="utf-8")
        files[lang] = path
    return files


def test_a_hand_computed_medqa_case(tmp_path):
    """Four rows in en, cn, fr (MedQA: options A-D, backticks removed first).

    row 1: B, B, C: one pair of three agrees, 1/3;
    row 2: "Answer: (B)" reads "(", removed: B, B agree, 1;
    row 3: X, X, A: the first X is removed, the second skipped and kept: X, A, 0;
    row 4: "Answer:" with nothing after (the script crashes) reads as outside the options and
           is removed; "答案: `C`" reads C once its backticks are gone: C, C, 1.
    CALM's consistency: (1/3 + 1 + 0 + 1) / 4 = 7/12 = 0.58333.

    Ours, read by the standard chain with golds B, B, A, C from the labels: en reads B, B,
    nothing, nothing (accuracy 2/4); zh B, B, nothing, C (3/4); fr C, B, A, C (3/4). Pairs
    of languages that answered: row 1 1/3, row 2 1, row 3 only fr (left out), row 4 1:
    consistency (1/3 + 1 + 1) / 3 = 7/9, one question skipped.
    """
    files = write_predictions(tmp_path, {
        "en": ["Explanation: schools.\nAnswer: B", "Answer: (B)", "Answer: X", "Answer:"],
        "cn": ["解释:学校。\n答案: B", "答案:B", "答案: X", "答案: `C`"],
        "fr": ["Explication : non.\nRéponse: C", "Réponse: B", "Réponse: A", "Réponse: C"],
    }, labels=["(B) school", "(B) 学校", "(A) town", "(C) hospital"])
    oracle_files = {lang: str(p) for lang, p in files.items()}
    assert oracle.consistency(oracle_files, "medqa") == (1 / 3 + 1 + 0 + 1) / 4
    result = calm_consistency(prediction_files([f"{k}={v}" for k, v in files.items()]),
                              default_variant(["en", "zh", "fr"]))
    assert result.variant == "medqa" and result.languages == ("en", "zh", "fr")
    assert result.per_row == [1 / 3, 1.0, 0.0, 1.0]
    assert result.calm == (1 / 3 + 1 + 0 + 1) / 4 and round(result.calm, 5) == 0.58333
    accuracy = {lang: v["value"] for lang, v in result.ours["accuracy"].items()}
    assert accuracy == {"en": 0.5, "fr": 0.75, "zh": 0.75}
    assert result.ours["consistency"]["value"] == pytest.approx(7 / 9)
    assert result.ours["consistency"]["skipped"] == 1
    as_json = result.to_dict()
    assert {k: as_json[k] for k in ("calm_consistency", "variant", "calm_codes", "rows")} == {
        "calm_consistency": result.calm, "variant": "medqa", "calm_codes": ["en", "cn", "fr"],
        "rows": 4}
    assert format_calm_consistency(result) == (
        "CALM's consistency (medqa variant of utils/get_consistency_score.py, en, cn, fr; "
        "4 rows): 0.5833")


def test_a_hand_computed_xcsqa_case_where_the_loop_keeps_answers(tmp_path):
    """Three rows in en, cn, fr, de (X-CSQA: options A-E, backticks kept).

    row 1: X, 答 ("答案：A" has a full-width colon, so no marker: the first character), A, A:
           X is removed and 答 skipped; 答, A, A leave one agreeing pair of three, 1/3 (a
           clean filter would give 1);
    row 2: E, E, "`" (backticks are kept here), E: "`" is removed and the last E, moved into
           its place, is never looked at: E, E, E, 1;
    row 3: "*" (from **B**), F, "" (an empty prediction), 1: "*" and "" are removed, F and
           1 skipped; they disagree, 0.
    CALM's consistency: (1/3 + 1 + 0) / 3 = 4/9.
    """
    files = write_predictions(tmp_path, {
        "en": ["Answer: X", "Answer: E", "Answer: **B**"],
        "cn": ["答案：A", "答案: E", "答案: F"],
        "fr": ["Réponse: A", "Réponse: `E`", ""],
        "de": ["Antwort: A", "Antwort: E", "Antwort: 1"],
    })
    as_oracle = {lang: str(p) for lang, p in files.items()}
    assert oracle.consistency(as_oracle, "csqa") == (1 / 3 + 1 + 0) / 3
    result = calm_consistency(prediction_files([f"{k}={v}" for k, v in files.items()]), "xcsqa")
    assert result.per_row == [1 / 3, 1.0, 0.0]
    assert result.calm == (1 / 3 + 1 + 0) / 3 and round(result.calm, 5) == 0.44444


def test_a_folder_of_language_subfolders(tmp_path):
    for code in ("en", "cn", "fr"):
        (tmp_path / code).mkdir()
        (tmp_path / code / "generated_predictions.jsonl").write_text(
            json.dumps({"predict": f"{oracle.MARKERS[code]} A"}) + "\n", encoding="utf-8")
    (tmp_path / "logs").mkdir()  # a folder without predictions is not a language
    files = prediction_files([tmp_path])
    assert sorted(files) == ["en", "fr", "zh"]
    assert calm_consistency(files, "medqa").calm == 1.0


def test_bad_files_are_refused_on_one_line(tmp_path):
    files = write_predictions(tmp_path, {"en": ["Answer: A", "Answer: B"],
                                         "cn": ["答案: A", "答案: B", "答案: C"]})
    with pytest.raises(InputError) as err:
        calm_consistency(prediction_files([f"en={files['en']}", f"cn={files['cn']}"]), "medqa")
    assert (err.value.path, err.value.line) == (str(files["cn"]), 3)
    assert "3 predictions, but 2 in" in err.value.message

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"predict": "Answer: A"}\n{"label": "(A) x"}\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        calm_consistency({"en": broken, "zh": files["cn"]}, "medqa")
    assert str(err.value).startswith(f"{broken}:2: field 'predict': missing")

    with pytest.raises(InputError, match="unknown language code 'xx'"):
        prediction_files([f"xx={files['en']}", f"cn={files['cn']}"])
    with pytest.raises(InputError, match="no answer marker for 'es'"):
        prediction_files([f"es={files['en']}", f"cn={files['cn']}"])
    with pytest.raises(InputError, match="a second file for zh"):
        prediction_files([f"zh={files['en']}", f"cn={files['cn']}"])
    with pytest.raises(InputError, match="not LANG=FILE"):
        prediction_files([f"en{files['en']}", f"cn={files['cn']}"])


def test_labels_that_name_different_answers_are_not_paired(tmp_path):
    en = write_predictions(tmp_path / "en", {"en": ["Answer: A", "Answer: B"]},
                           labels=["(A) x", "(B) y"])["en"]
    cn = write_predictions(tmp_path / "cn", {"cn": ["答案: A", "答案: B"]},
                           labels=["(A) x", "(C) z"])["cn"]
    with pytest.raises(InputError) as err:
        calm_consistency({"en": en, "zh": cn}, "medqa")
    assert (err.value.path, err.value.line, err.value.field) == (str(cn), 2, "label")
    assert "the label says C, but B in" in err.value.message


def test_the_variant_follows_the_scripts_functions():
    assert default_variant(["zh", "en", "fr"]) == "medqa"
    assert default_variant(list(CALM_MARKERS)) == "xcsqa"
    with pytest.raises(InputError, match="--calm-variant"):
        default_variant(["en", "zh"])
    assert VARIANTS["medqa"].letters == "ABCD" and VARIANTS["xcsqa"].letters == "ABCDE"
