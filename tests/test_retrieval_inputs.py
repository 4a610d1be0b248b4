"""Retrieval inputs without a model: corpora, language detection, specs, fusion, BM25, policies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.retrieval.corpora import hash_corpus, read_corpus
from calm_rag.retrieval.fusion import reciprocal_rank_fusion
from calm_rag.retrieval.language_id import detect_language, language_code, written_in
from calm_rag.retrieval.lexical import LexicalIndex, tokenize
from calm_rag.retrieval.policies import QUERY_POLICIES
from calm_rag.retrieval.spec import load_spec, resolve_path, spec_from_dict

REPO = Path(__file__).resolve().parents[1]

GOOD_SPEC = """\
name: tiny
corpus:
  - type: jsonl
    path: corpus.jsonl
chunking:
  chunk_size: 64
  chunk_overlap: 8
embedder:
  model: all-MiniLM-L6-v2
faiss:
  factory: Flat
  metric: ip
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def write_spec(tmp_path: Path, text: str = GOOD_SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize("text, code", [
    ("The heart pumps blood through the arteries and the veins of the body.", "en"),
    ("Le foie transforme les médicaments et produit la bile pour la digestion.", "fr"),
    ("Die Nieren filtern das Blut und bilden den Urin in den Nephronen.", "de"),
    ("Il cuore pompa il sangue attraverso le arterie e le vene del corpo.", "it"),
    ("心脏是循环系统的中心，负责把血液泵到全身。", "zh"),
    ("心臟是循環系統的中心，負責把血液泵到全身。", "zh-hant"),  # the same, traditional
    ("男，45歲。反覆發作性上腹痛3年，最可能的診斷為何？", "zh-hant"),  # MedQA Taiwan's style
    ("中文", "zh"),  # no character tells the scripts apart: simplified, as before
    # English terms in Chinese count as words, not letter by letter
    ("解釋: 此病人最可能為 Cushing syndrome，應先做 dexamethasone suppression test。", "zh-hant"),
    ("解释: 此病人最可能为 Cushing syndrome，应先做 dexamethasone suppression test。", "zh"),
    ("The word 心脏 means heart in Chinese.", "en"),
    ("心臓は血液を全身に送り出すポンプの役割を果たしています。", "ja"),
    ("심장은 혈액을 온몸으로 보낸다.", "ko"),
    ("12345 -- 678", "und"),
])
def test_detect_language(text, code):
    assert detect_language(text) == code


@pytest.mark.parametrize("text, code, expected", [
    ("心臟是循環系統的中心。", "zh-hant", True),
    ("心臟是循環系統的中心。", "zh", False),  # traditional is not simplified
    ("心脏是循环系统的中心。", "zh-hant", False),
    ("答案是 B", "zh", True),  # no character tells the scripts apart: either
    ("答案是 B", "zh-hant", True),
    ("The answer is B because the heart pumps blood.", "zh-hant", False),
    ("The answer is B because the heart pumps blood.", "en", True),
])
def test_written_in_takes_script_neutral_chinese_for_either(text, code, expected):
    assert written_in(text, code) is expected


def test_the_script_sets_share_no_character():
    from calm_rag.retrieval.language_id import script_characters

    traditional, simplified = script_characters()
    assert not traditional & simplified
    assert {"這", "們", "興", "學"} <= traditional and {"这", "们", "兴", "学"} <= simplified


def test_language_code_uses_the_registry_and_keeps_unknown_codes():
    assert language_code("cn") == "zh"
    assert language_code("EN") == "en"
    assert language_code("nl") == "nl"


# --------------------------------------------------------------------------- corpora


def test_jsonl_corpus_reads_fields_and_detects_missing_languages(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"id": 1, "title": "Heart", "text": "The heart pumps blood through the body."},
        {"id": "b", "lang": "cn", "text": "心脏负责把血液泵到全身。"},
        {"id": "c", "text": "Le foie produit la bile et transforme les médicaments."},
    ])
    docs = list(read_corpus("jsonl", path))
    assert [(d.id, d.lang, d.title) for d in docs] == [("1", "en", "Heart"), ("b", "zh", ""),
                                                       ("c", "fr", "")]
    assert docs[0].source == "c.jsonl:1"
    forced = list(read_corpus("jsonl", path, lang="de"))
    assert {d.lang for d in forced} == {"de"}


@pytest.mark.parametrize("rows, line, message", [
    ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], 2, "duplicate id 'a'"),
    ([{"id": "a", "text": "x"}, {"id": "b"}], 2, "field 'text': missing"),
    ([{"text": "x"}], 1, "field 'id': missing"),
    ([{"id": "a", "text": 3}], 1, "field 'text': expected a string"),
    ([{"id": "a", "text": "x", "title": 5}], 1, "field 'title'"),
])
def test_jsonl_corpus_errors_name_the_line(tmp_path, rows, line, message):
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(InputError) as err:
        list(read_corpus("jsonl", path))
    assert err.value.line == line
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_corpus_errors_for_missing_empty_and_textless_corpora(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        list(read_corpus("jsonl", tmp_path / "absent.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        list(read_corpus("jsonl", tmp_path / "empty.jsonl"))
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"id": "a", "text": "  "}])
    with pytest.raises(InputError, match="no document with text"):
        list(read_corpus("jsonl", blank))
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match=r"no \.txt files"):
        list(read_corpus("text", tmp_path / "folder"))
    with pytest.raises(InputError, match="unknown corpus type"):
        list(read_corpus("pdf", tmp_path / "folder"))


def test_text_folder_is_read_recursively_in_name_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "kidney_notes.txt").write_text("The kidney filters the blood.", "utf-8")
    (tmp_path / "a.txt").write_text("Le cœur pompe le sang dans tout le corps.", "utf-8")
    docs = list(read_corpus("text", tmp_path))
    assert [(d.id, d.lang, d.title) for d in docs] == [("a", "fr", "a"),
                                                       ("b/kidney_notes", "en", "kidney notes")]


def test_medqa_textbooks_folder(tmp_path):
    books = tmp_path / "textbooks"
    (books / "en").mkdir(parents=True)
    (books / "zh_paragraph").mkdir()
    (books / "zh_sentence").mkdir()  # the same Chinese text cut finer: not read
    (books / "en" / "Anatomy_Gray.txt").write_text("The femur is the longest bone.", "utf-8")
    (books / "zh_paragraph" / "内科学.txt").write_text("高血压是常见的慢性病。", "utf-8")
    (books / "zh_sentence" / "内科学.txt").write_text("高血压是常见的慢性病。", "utf-8")
    docs = list(read_corpus("medqa-textbooks", books))
    assert [(d.id, d.lang, d.title) for d in docs] == [("en/Anatomy_Gray", "en", "Anatomy Gray"),
                                                       ("zh/内科学", "zh", "内科学")]
    with pytest.raises(InputError, match="no en/ or zh_paragraph/"):
        list(read_corpus("medqa-textbooks", books / "en"))


def test_corpus_hash_follows_content(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "one"}])
    first = hash_corpus("jsonl", path)
    assert hash_corpus("jsonl", path) == first
    write_jsonl(path, [{"id": "a", "text": "two"}])
    assert hash_corpus("jsonl", path) != first


# --------------------------------------------------------------------------- specs


def test_spec_loads_with_defaults(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    assert spec.name == "tiny"
    assert spec.chunking.chunk_size == 64
    assert spec.embedder.normalize is True and spec.embedder.shard_size == 2048
    assert spec.faiss.factory == "Flat"
    assert resolve_path(spec.corpus[0].path, spec.base_dir) == tmp_path.resolve() / "corpus.jsonl"
    assert "spec_path" not in spec.to_dict()


@pytest.mark.parametrize("old, new, key, line, message", [
    ("  factory: Flat", "  factroy: Flat", "faiss.factroy", 11, "unknown key"),
    ("  chunk_size: 64", "  chunk_size: big", "chunking.chunk_size", 6, "expected int, got str"),
    ("  chunk_size: 64", "  chunk_size: true", "chunking.chunk_size", 6, "boolean"),
    ("  chunk_overlap: 8", "  chunk_overlap: 80", "chunking.chunk_overlap", 7, "less than"),
    ("  metric: ip", "  metric: cosine", "faiss.metric", 12, "not allowed"),
    ("  - type: jsonl", "  - type: pdf", "corpus[0].type", 3, "unknown corpus type 'pdf'"),
    ("name: tiny", "name: ../evil", "name", 1, "folder name"),
    ("name: tiny", "title: tiny", "title", 1, "unknown key"),
])
def test_spec_errors_name_the_key_and_line(tmp_path, old, new, key, line, message):
    path = write_spec(tmp_path, GOOD_SPEC.replace(old, new))
    with pytest.raises(InputError) as err:
        load_spec(path)
    assert err.value.field == key
    assert message in str(err.value)
    assert err.value.path == str(path)
    if line is not None:
        assert err.value.line == line


def test_spec_rejects_malformed_yaml_and_missing_keys(tmp_path):
    with pytest.raises(InputError, match="malformed YAML") as err:
        load_spec(write_spec(tmp_path, "name: [unclosed\ncorpus: x\n"))
    assert err.value.line is not None
    with pytest.raises(InputError, match="field 'corpus': missing"):
        load_spec(write_spec(tmp_path, "name: tiny\n"))
    with pytest.raises(InputError, match="expected a mapping"):
        load_spec(write_spec(tmp_path, "- a\n- b\n"))


def test_shipped_specs_load_and_point_at_bundled_data():
    names = {}
    for path in sorted((REPO / "indexes").glob("*.yaml")):
        spec = load_spec(path)
        names[spec.name] = spec
    assert {"medical-demo", "commonsense-demo", "medqa-textbooks"} <= set(names)
    for name in ("medical-demo", "commonsense-demo"):
        spec = names[name]
        assert spec.embedder.model == "multilingual-e5-small"
        assert spec.faiss.factory == "Flat"
        assert spec.corpus[0].path.startswith("package:")
        assert resolve_path(spec.corpus[0].path, Path("/nowhere")).name.endswith(".jsonl")
    assert names["medqa-textbooks"].faiss.factory.startswith(("HNSW", "IVF"))


def test_paths_expand_variables_with_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("CALM_RAG_TEST_DATA", raising=False)
    assert resolve_path("${CALM_RAG_TEST_DATA:-data}/x", tmp_path) == tmp_path / "data" / "x"
    monkeypatch.setenv("CALM_RAG_TEST_DATA", str(tmp_path / "elsewhere"))
    assert resolve_path("${CALM_RAG_TEST_DATA:-data}/x", Path("/")) == tmp_path / "elsewhere/x"
    with pytest.raises(InputError, match="no installed package"):
        resolve_path("package:no_such_package_xyz/data.jsonl", tmp_path)


def test_spec_from_dict_checks_like_yaml(tmp_path):
    spec = spec_from_dict({"name": "x", "corpus": [{"type": "text", "path": "docs"}]}, tmp_path)
    assert spec.base_dir == tmp_path.resolve()
    with pytest.raises(InputError, match=r"embedder\.batch_size"):
        spec_from_dict({"name": "x", "corpus": [{"type": "text", "path": "d"}],
                        "embedder": {"batch_size": 0}})


# --------------------------------------------------------------------------- fusion, BM25


def test_reciprocal_rank_fusion_sums_reciprocal_ranks():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    scores = dict(fused)
    assert [item for item, _ in fused] == ["b", "a", "d", "c"]
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    # Ties keep the order of first appearance; weights scale a ranking's votes.
    assert [i for i, _ in reciprocal_rank_fusion([["x"], ["y"]])] == ["x", "y"]
    assert [i for i, _ in reciprocal_rank_fusion([["x"], ["y"]], weights=[1, 2])] == ["y", "x"]


def test_tokenizer_cuts_cjk_into_bigrams():
    assert tokenize("Heart-Failure, 2 drugs", "en") == ["heart", "failure", "2", "drugs"]
    assert tokenize("高血压病", "zh") == ["高血", "血压", "压病"]
    assert tokenize("心 disease", "en") == ["心", "disease"]


def test_bm25_ranks_keyword_matches_and_honours_the_filter():
    texts = ["aspirin inhibits cyclooxygenase", "the kidney filters blood",
             "aspirin and kidney damage", "高血压的治疗"]
    index = LexicalIndex.build((text, "zh" if i == 3 else "en") for i, text in enumerate(texts))
    rows = [row for row, _ in index.search("aspirin", 5)]
    assert set(rows) == {0, 2}
    assert index.search("高血压", 5)[0][0] == 3
    allowed = np.array([False, True, True, True])
    assert [row for row, _ in index.search("aspirin", 5, allowed)] == [2]
    assert index.search("zebra", 5) == []


def test_policies_are_registered_by_name():
    assert set(QUERY_POLICIES) == {"native", "pivot", "fused"}
    assert QUERY_POLICIES.get("native")("q", "p") == ["q"]
    assert QUERY_POLICIES.get("pivot")("q", "p") == ["p"]
    assert QUERY_POLICIES.get("pivot")("q", None) == ["q"]
    assert QUERY_POLICIES.get("fused")("q", "p") == ["q", "p"]
    assert QUERY_POLICIES.get("fused")("q", "q") == ["q"]
    with pytest.raises(InputError, match="unknown retrieval policy"):
        QUERY_POLICIES.get("mixed")


# --------------------------------------------------------------------------- CLI errors


def test_cli_input_errors_exit_2(tmp_path, capsys):
    bad = write_spec(tmp_path, GOOD_SPEC.replace("  factory: Flat", "  factroy: Flat"))
    cases = [
        (["index", "build", str(tmp_path / "absent.yaml")], "no such file"),
        (["index", "build", str(bad)], "faiss.factroy"),
        (["index", "query", "nothing", "q", "--index-dir", str(tmp_path)], "no built index"),
        (["index", "info", "nothing", "--index-dir", str(tmp_path)], "no built index"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_cli_build_reports_a_missing_corpus(tmp_path, capsys):
    spec = write_spec(tmp_path)  # corpus.jsonl is not there
    assert main(["index", "build", str(spec), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "corpus[0].path" in err and "corpus.jsonl" in err


def test_cli_list_shows_specs(tmp_path, capsys):
    write_spec(tmp_path)
    assert main(["index", "list", "--index-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "not built" in out
    assert main(["index", "list", "--index-dir", str(tmp_path / "none")]) == 0
    assert "no index specs" in capsys.readouterr().out


def test_index_keys_prints_a_documented_manual(capsys):
    assert main(["index", "keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split(" ", 1)[0].rstrip(":") for line in lines]
    assert {"name", "corpus[].path", "chunking.chunk_size", "faiss.factory"} <= set(keys)
    assert all(line.split("): ", 1)[-1].strip() for line in lines), "every key is documented"


def test_lexical_search_logs_nothing_below_warnings(caplog):
    """bm25s sets its logger to DEBUG when imported; a configured root logger must not get a
    line per search."""
    with caplog.at_level("DEBUG"):
        index = LexicalIndex.build([("milk in the refrigerator", "en"),
                                    ("bees make honey", "en")])
        assert index.search("honey", 1)[0][0] == 1
    assert not [r for r in caplog.records if r.name.startswith("bm25s")]
