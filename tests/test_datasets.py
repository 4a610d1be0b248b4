from __future__ import annotations

import json
from pathlib import Path

import pytest

from calm_rag.datasets import (
    export_llamafactory,
    export_trl,
    load_bundled,
    read_calm_samples,
    read_medqa,
    read_samples,
    read_trl_rows,
    read_xcsqa,
    write_samples,
)
from calm_rag.datasets.bundled import BUNDLED, BUNDLED_LANGUAGES
from calm_rag.datasets.calm import parse_calm_input, split_language
from calm_rag.datasets.medqa import write_medqa
from calm_rag.datasets.xcsqa import write_xcsqa
from calm_rag.errors import InputError
from calm_rag.vote.pairs import build_pairs
from calm_rag.vote.voting import VoteConfig, vote_all
from tests.helpers import make_samples


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
                            + "\n" for r in rows), encoding="utf-8")
    return path


MEDQA_ROW = {"question": "Which vitamin?", "options": {"A": "C", "B": "D", "C": "K", "D": "B12"},
             "answer": "K", "answer_idx": "C", "meta_info": "step1"}
XCSQA_ROW = {"id": "x1", "lang": "de", "question": {"stem": "Wo?", "choices": [
    {"label": "A", "text": "Haus"}, {"label": "B", "text": "Wald"}]}, "answerKey": "B"}


def test_medqa_reads_region_files(tmp_path):
    five = dict(MEDQA_ROW, options={**MEDQA_ROW["options"], "E": "A"})
    us = write_lines(tmp_path / "US_4_options_test.jsonl", [MEDQA_ROW, five])
    questions = read_medqa(us)
    assert [q.lang for q in questions] == ["en", "en"] and len(questions[1].options) == 5
    assert questions[0].answer == "C" and questions[0].id == "medqa-US_4_options_test-00001"
    (tmp_path / "Taiwan").mkdir()
    taiwan = write_lines(tmp_path / "Taiwan" / "test.jsonl", [MEDQA_ROW])
    assert read_medqa(taiwan)[0].lang == "zh-hant"  # traditional Chinese
    for code in ("en", "zh"):  # the release's translations of the Taiwan set
        (tmp_path / "Taiwan" / "tw_translated_jsonl" / code).mkdir(parents=True)
        translated = write_lines(tmp_path / "Taiwan" / "tw_translated_jsonl" / code /
                                 f"test-2{code}.jsonl", [MEDQA_ROW])
        assert read_medqa(translated)[0].lang == code
    assert write_medqa(questions)[0]["answer"] == "K"


@pytest.mark.parametrize(("row", "message"), [
    ("{bad json", r"bank\.jsonl:2: malformed JSON"),
    ({"options": {"A": "x"}}, r"bank\.jsonl:2: field 'question'"),
    (dict(MEDQA_ROW, answer_idx="F"), r"bank\.jsonl:2: field 'answer_idx'.*outside the options"),
    (dict(MEDQA_ROW, answer="D"), r"bank\.jsonl:2: field 'answer'.*does not match"),
])
def test_medqa_errors_name_file_line_and_field(tmp_path, row, message):
    path = write_lines(tmp_path / "bank.jsonl", [MEDQA_ROW, row])
    with pytest.raises(InputError, match=message):
        read_medqa(path, lang="en")


def test_medqa_without_a_language_asks_for_one(tmp_path):
    with pytest.raises(InputError, match="cannot tell the language"):
        read_medqa(write_lines(tmp_path / "bank.jsonl", [MEDQA_ROW]))


def test_xcsqa_round_trip_and_test_split(tmp_path):
    no_key = {k: v for k, v in XCSQA_ROW.items() if k != "answerKey"}
    questions = read_xcsqa(write_lines(tmp_path / "dev.jsonl", [XCSQA_ROW, no_key]))
    assert questions[0].options == {"A": "Haus", "B": "Wald"} and questions[0].answer == "B"
    assert questions[1].answer is None
    assert write_xcsqa(questions[:1]) == [XCSQA_ROW]


@pytest.mark.parametrize(("row", "message"), [
    (dict(XCSQA_ROW, lang="klingon"), r"dev\.jsonl:1: field 'lang': unknown language code"),
    (dict(XCSQA_ROW, answerKey="E"), r"dev\.jsonl:1: field 'answerKey'.*outside"),
    (dict(XCSQA_ROW, question={"stem": "?"}), r"dev\.jsonl:1: field 'question.choices'"),
    ({k: v for k, v in XCSQA_ROW.items() if k != "id"}, r"dev\.jsonl:1: field 'id'"),
])
def test_xcsqa_errors(tmp_path, row, message):
    with pytest.raises(InputError, match=message):
        read_xcsqa(write_lines(tmp_path / "dev.jsonl", [row]))


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "dev.jsonl").write_text("\n")
    with pytest.raises(InputError, match="dev.jsonl: the file is empty"):
        read_xcsqa(tmp_path / "dev.jsonl")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sets_are_parallel_in_six_languages(name):
    questions = load_bundled(name)
    by_lang = {}
    for q in questions:
        by_lang.setdefault(q.lang, []).append(q)
    assert sorted(by_lang) == sorted(BUNDLED_LANGUAGES)
    reference = by_lang["en"]
    assert len(reference) >= 30
    for lang, qs in by_lang.items():
        assert [q.id for q in qs] == [q.id for q in reference], lang
        assert [q.answer for q in qs] == [q.answer for q in reference], lang
        assert [q.labels for q in qs] == [q.labels for q in reference], lang
        assert all(q.answer for q in qs)


def calm_item(stem: str, pred: list[str], gold: str = "B") -> dict:
    return {"instruction": "Answer.", "input": f"{stem}\nA. one\nB. two\nC. three",
            "output": gold, "pred": pred}


def write_calm(folder: Path, lang: str, items: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"x_csqa_{lang}_train_sampled.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_calm_input_parsing_and_file_names():
    stem, options = parse_calm_input("Question: Where?\nA. a b\nB. c\nAnswer:")
    assert (stem, options) == ("Where?", {"A": "a b", "B": "c"})
    assert split_language(Path("x_csqa_cn_train_sampled.json")) == ("zh", "x_csqa_train_sampled")
    assert split_language(Path("xcsr_jap_dev.json"))[0] == "ja"


def test_calm_folder_reads_parallel_samples(tmp_path):
    write_calm(tmp_path, "en", [calm_item("Q1", ["Answer: B", "Answer: A"]),
                                calm_item("Q2", ["x"])])
    write_calm(tmp_path, "cn", [calm_item("问1", ["答案:B"]), calm_item("问2", ["答案:C"])])
    samples = read_calm_samples(tmp_path)
    assert {s.question.id for s in samples} == {"x_csqa_train_sampled-00000",
                                                 "x_csqa_train_sampled-00001"}
    assert {s.lang for s in samples} == {"en", "zh"}
    assert samples[0].instruction == "Answer." and samples[0].question.answer == "B"
    assert samples[0].extraction == ""  # not extracted yet


def test_calm_folder_misaligned_is_an_error(tmp_path):
    write_calm(tmp_path, "en", [calm_item("Q1", ["a"]), calm_item("Q2", ["b"])])
    write_calm(tmp_path, "fr", [calm_item("Q1", ["a"])])
    with pytest.raises(InputError, match=r"fr_train_sampled.json:1: has 1 items but"):
        read_calm_samples(tmp_path)
    write_calm(tmp_path, "fr", [calm_item("Q1", ["a"]), calm_item("Q2", ["b"], gold="C")])
    with pytest.raises(InputError, match=r"fr_train_sampled.json:\d+: field 'question.answer'"):
        read_calm_samples(tmp_path)


def test_calm_item_errors_name_the_line(tmp_path):
    items = [calm_item("Q1", ["a"]), {"instruction": "x", "input": "Q2\nA. a", "output": "A"}]
    path = write_calm(tmp_path, "en", items)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if '"Q2' in text)
    with pytest.raises(InputError, match=rf"en_train_sampled.json:{line - 2}: field 'pred'"):
        read_calm_samples(path)


def test_samples_jsonl_round_trip_and_misalignment(tmp_path):
    samples = make_samples({"en": ["A", None], "zh": ["C"]})
    write_samples(tmp_path / "s.jsonl", samples)
    assert read_samples(tmp_path / "s.jsonl") == samples
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    rows[2]["question"]["answer"] = "D"
    write_lines(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=r"bad\.jsonl:3: field 'question.answer'.*do not line up"):
        read_samples(tmp_path / "bad.jsonl")
    rows[2]["question"]["answer"], rows[2]["answer"] = "C", "Z"
    write_lines(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=r"bad\.jsonl:3: field 'answer'.*outside the options"):
        read_samples(tmp_path / "bad.jsonl")


def _pairs():
    samples = make_samples({"en": ["C", "A"], "zh": ["C", "B", "C"]})
    config = VoteConfig()
    return build_pairs(samples, vote_all(samples, config), config)


def test_llamafactory_export(tmp_path):
    counts = export_llamafactory(_pairs(), tmp_path / "lf", calm_names=True)
    assert counts == {"en": 1, "cn": 1}
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["DPO_cn"] == {"file_name": "DPO_cn.json", "ranking": True, "columns": {
        "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}
    rows = json.loads((tmp_path / "lf" / "DPO_cn.json").read_text())
    assert rows == [{"instruction": "instruction zh", "input": "input zh",
                     "chosen": "zh response 0: Answer: C", "rejected": "zh response 1: Answer: B"}]


@pytest.mark.parametrize("form", ["standard", "conversational"])
def test_trl_rows_round_trip(tmp_path, form):
    assert export_trl(_pairs(), tmp_path / "dpo.jsonl", form=form) == 2
    rows = read_trl_rows(tmp_path / "dpo.jsonl")
    if form == "standard":
        assert rows[0]["prompt"] == "instruction en\ninput en"
    else:
        assert rows[0]["chosen"] == [{"role": "assistant", "content": "en response 0: Answer: C"}]
    assert rows[0]["question_id"] == "q1" and rows[0]["rejected_answer"] == "A"


def test_trl_rows_mixing_forms_is_an_error(tmp_path):
    row = {"prompt": "p", "chosen": [{"role": "assistant", "content": "c"}], "rejected": "r"}
    with pytest.raises(InputError, match=r"dpo\.jsonl:1: field 'chosen': mixes"):
        read_trl_rows(write_lines(tmp_path / "dpo.jsonl", [row]))
