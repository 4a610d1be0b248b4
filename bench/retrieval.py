"""Retrieval benchmark (not a test): prints figures and ratios; bench/README.md records them.

    python bench/retrieval.py                  # everything (~45 min on 2 cores)
    python bench/retrieval.py --sections build,query --repeat 3
    python bench/retrieval.py --sections real  # 100k real chunks: build, memory, ANN recall
    python bench/retrieval.py --sections recall  # recall@1..10 on the bundled sets (~2 min)

Sections:

* ``build``  building an index of the bundled corpora through calm_rag vs doing the same work with
  raw sentence-transformers + FAISS (same chunks, prompt, batch size, normalization, Flat index,
  chunks written). The model is loaded once and shared; calm_rag's weight fingerprint, corpus
  hashes, shards and checksums count against it.
* ``query``  query throughput: ``Retriever.retrieve_many`` / ``retrieve`` vs raw encode + search.
* ``real``   100k chunks of real English text found on this machine (Python docstrings, package
  documentation, licenses, changelogs), built through ``build_index`` with all-MiniLM-L6-v2 into
  Flat, HNSW32 and IVF1024 indexes, each build in a fresh process: build time, embedding rate,
  peak RSS, then recall@10 and search speed-up of HNSW and IVF against Flat for 1 000 held-out
  passages' first sentences. The embeddings are computed once (the Flat build keeps its shards,
  the ANN builds reuse them).
* ``scale``  (not in the default run) 100k and 1M chunks through ``build_index`` into IVF-PQ,
  each step in a fresh process: peak RSS of build and of open, open time, one-query latency
  against Flat, recall@10, bytes on disk per chunk, the embedding rate on real text, and a
  MedCorp sizing (see bench/retrieval_scale.py; results in bench/results/retrieval_scale.md).
* ``synthetic`` (extra) the same recall and speed-up comparison on synthetic clustered unit
  vectors: the hard, weakly clustered case that real text does not show.
* ``recall`` the shipped demo indexes (``indexes/{medical,commonsense}-demo.yaml``, built in a
  temporary folder) searched with every bundled question in its 6 languages: the share of
  questions whose relevant passage (``calm_rag/retrieval/data/<set>_qrels.jsonl``) is among the
  top k, for k = 1..10, per language and policy (native, pivot, fused with the default fusion,
  fused + BM25, and the fusion calm_rag used before: RRF at 60 over ``max(4k, 20)``), then the
  worst fused - max(native, pivot) gap in questions; written to
  bench/results/retrieval_recall.md. ``--reranker PATH_OR_ID`` adds native and fused with their
  first ``--rerank-top-n`` hits reordered by that CrossEncoder (``retrieval.rerank``); give
  ``--recall-out`` another file unless the reranker is one worth recording.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "calm_rag" / "retrieval" / "data"
CORPORA = [DATA / "medical_corpus.jsonl", DATA / "commonsense_corpus.jsonl"]
SECTIONS = ("build", "query", "real", "synthetic", "recall")
RECALL_SETS = ("medical", "commonsense")
RECALL_KS = tuple(range(1, 11))
RECALL_OUT = REPO / "bench" / "results" / "retrieval_recall.md"


def main() -> None:
    args = parse_args()
    results: dict[str, dict] = {}
    sections = args.sections.split(",")
    if "build" in sections or "query" in sections:
        results.update(bench_build_and_query(args, sections))
    if "real" in sections:
        results["real"] = bench_real(args)
    if "synthetic" in sections:
        results["synthetic"] = bench_ann(args.ann_size, args.ann_queries)
    if "recall" in sections:
        results["recall"] = bench_recall(args.recall_out, args.reranker, args.rerank_top_n)
    if "scale" in sections:
        from retrieval_scale import bench_scale

        sizes = [int(size) for size in args.scale_sizes.split(",")]
        work = args.scale_dir or Path(tempfile.gettempdir()) / "calm_rag_scale"
        results["scale"] = bench_scale(sizes, work)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side; best kept")
    parser.add_argument("--real-size", type=int, default=100_000, help="chunks (real section)")
    parser.add_argument("--real-queries", type=int, default=1000)
    parser.add_argument("--real-dir", type=Path, default=None,
                        help="where the real corpus is cached and the indexes are built "
                             "(default: $CALM_RAG_HOME/bench/real-<size>; indexes removed after)")
    parser.add_argument("--ann-size", type=int, default=100_000, help="vectors (synthetic)")
    parser.add_argument("--ann-queries", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--scale-sizes", default="100000,1000000", help="chunks (scale)")
    parser.add_argument("--scale-dir", type=Path, default=None,
                        help="where the scale section writes (default: a temporary folder)")
    parser.add_argument("--recall-out", type=Path, default=RECALL_OUT,
                        help="where the recall section writes its tables (markdown)")
    parser.add_argument("--reranker", default="",
                        help="recall section: also rerank native and fused with this "
                             "CrossEncoder (a folder, or a hub id in the local cache)")
    parser.add_argument("--rerank-top-n", type=int, default=20,
                        help="hits the reranker rereads (retrieval.rerank.top_n)")
    parser.add_argument("--build-child", help=argparse.SUPPRESS)
    parser.add_argument("--scale-child", help=argparse.SUPPRESS)
    return parser.parse_args()


# --------------------------------------------------------------------------- build and query


def read_documents() -> list[dict]:
    return [json.loads(line) for path in CORPORA for line in path.open(encoding="utf-8")]


def bench_spec(model: str, base: Path, corpora: list[Path] = CORPORA):
    from calm_rag.retrieval.spec import spec_from_dict

    return spec_from_dict({
        "name": "bench", "corpus": [{"type": "jsonl", "path": str(p)} for p in corpora],
        "chunking": {"chunk_size": 256, "chunk_overlap": 32},
        "embedder": {"model": model, "batch_size": 32, "normalize": True},
        "faiss": {"factory": "Flat", "metric": "ip"}}, base_dir=base)


def calm_build(spec, out: Path) -> float:
    from calm_rag.retrieval import embedder
    from calm_rag.retrieval.build import build_index

    embedder._fingerprint.cache_clear()  # a CLI build hashes the weights once per process
    started = time.perf_counter()
    build_index(spec, out, force=True, progress=False)
    return time.perf_counter() - started


def raw_build(model, documents: list[dict], out: Path) -> float:
    """The same work without calm_rag: split, embed with the passage prompt, Flat, write."""
    import faiss
    from llama_index.core.node_parser import SentenceSplitter

    started = time.perf_counter()
    splitter = SentenceSplitter(chunk_size=256, chunk_overlap=32, tokenizer=lambda t: (
        model.tokenizer.encode(t, add_special_tokens=False, verbose=False)))
    chunks = [(doc, text) for doc in documents for text in splitter.split_text(doc["text"])]
    texts = [f"{doc['title']}\n{text}" if doc.get("title") else text for doc, text in chunks]
    prompt = model.prompts.get("document") or model.prompts.get("passage") or ""
    vectors = model.encode(texts, prompt=prompt, batch_size=32, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "index.faiss"))
    with (out / "chunks.jsonl").open("w", encoding="utf-8") as handle:
        for doc, text in chunks:
            handle.write(json.dumps({"doc_id": doc["id"], "text": text}, ensure_ascii=False)
                         + "\n")
    return time.perf_counter() - started


def best_of(repeat: int, run: Callable[[], float]) -> float:
    # The machine is shared: the fastest run is the least disturbed one.
    return min(run() for _ in range(repeat))


def bench_build_and_query(args: argparse.Namespace, sections: list[str]) -> dict[str, dict]:
    from calm_rag.retrieval.embedder import Embedder
    from calm_rag.retrieval.retriever import Retriever

    model = Embedder.load(args.model).model  # loaded once, shared by both sides
    documents = read_documents()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = bench_spec(args.model, tmp)
        calm_times, raw_times = [], []
        for _ in range(args.repeat if "build" in sections else 1):  # interleaved
            raw_times.append(raw_build(model, documents, tmp / "raw"))
            calm_times.append(calm_build(spec, tmp / "calm"))
        retriever = Retriever.open("bench", index_dir=tmp / "calm")
        chunks = retriever.index.ntotal
        if "build" in sections:
            results["build"] = report("build", min(calm_times), min(raw_times),
                                      f"{chunks} chunks, {args.model}", 1.3)
        if "query" in sections:
            import faiss

            raw_index = faiss.read_index(str(tmp / "raw" / "index.faiss"))
            results.update(bench_query(retriever, model, raw_index, args.repeat))
    return results


def bundled_queries() -> list[str]:
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.retrieval.retriever import question_query

    return [question_query(q) for name in ("medical", "commonsense") for q in load_bundled(name)]


def bench_query(retriever, model, raw_index, repeat: int) -> dict[str, dict]:
    """Raw and calm_rag take turns on the same query slices (the machine is shared, so
    load changes hit both sides alike); each side's times are summed."""
    queries = bundled_queries()
    prompt = model.prompts.get("query") or ""

    def raw(batch: list[str]) -> None:
        vectors = model.encode(batch, prompt=prompt, batch_size=32, normalize_embeddings=True,
                               show_progress_bar=False)
        raw_index.search(vectors, 10)

    def calm(batch: list[str]) -> None:
        if len(batch) == 1:
            retriever.retrieve(batch[0], k=10)
        else:
            retriever.retrieve_many(batch, k=10)

    out = {}
    for name, size, n in (("query batch", 48, len(queries)), ("query one by one", 1, 100)):
        slices = [queries[i:i + size] for i in range(0, n, size)]
        raw(slices[0]), calm(slices[0])  # warm-up
        totals = {"raw": 0.0, "calm": 0.0}
        for _ in range(repeat):
            for batch in slices:
                for side, run in (("raw", raw), ("calm", calm)):
                    started = time.perf_counter()
                    run(batch)
                    totals[side] += time.perf_counter() - started
        count = n * repeat
        how = f"batches of {size}" if size > 1 else "one at a time"
        out[name] = report(name, totals["calm"], totals["raw"],
                           f"{n} queries x{repeat}, {how}, k=10; {count / totals['calm']:.1f} "
                           f"vs {count / totals['raw']:.1f} q/s", 1.2)
    return out


def report(name: str, calm: float, raw: float, what: str, aim: float) -> dict:
    ratio = calm / raw
    verdict = "ok" if ratio <= aim else f"ABOVE the {aim}x aim"
    print(f"{name:<18} calm_rag {calm:7.2f} s   raw {raw:7.2f} s   ratio {ratio:4.2f}x "
          f"(aim <= {aim}x: {verdict})   [{what}]", flush=True)
    return {"calm_rag_s": round(calm, 3), "raw_s": round(raw, 3), "ratio": round(ratio, 3),
            "aim": aim, "what": what}


# --------------------------------------------------------------------------- recall@k


def bench_recall(out: Path, reranker: str = "", top_n: int = 20) -> dict:
    """Recall@k of the demo indexes on the bundled questions, per set, policy, k and language
    (and reranked by the CrossEncoder ``reranker``, when given, over each list's first
    ``top_n``); the markdown tables are printed and written to ``out``."""
    from retrieval_scale import cpu_flags

    from calm_rag.io import atomic_write

    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in RECALL_SETS:
            tables[dataset] = recall_table(dataset, Path(tmp), reranker, top_n)
    lines = [f"# Retrieval recall@k on the bundled sets ({time.strftime('%Y-%m-%d')})", "",
             f"CPU: {cpu_flags()}. Command: `python bench/retrieval.py --sections recall`.",
             "Each cell: the share of the questions in that language whose relevant passage "
             "(its qrel) is among the top k chunks; multilingual-e5-small, Flat, whole index "
             "searched (no language filter). `fused`: the default fusion (z-scores summed, 100 "
             "candidates a list); `fused rrf60 (before)`: reciprocal-rank fusion at 60 over "
             "max(4k, 20), what calm_rag did before."
             + (f" `+rerank`: the first {top_n} hits reordered by the CrossEncoder "
                f"`{reranker}` reading the question in its own language "
                "(`retrieval.rerank`)." if reranker else ""), ""]
    for dataset, table in tables.items():
        lines += recall_markdown(dataset, table)
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as handle:
        handle.write(text)
    return {dataset: {policy: {str(k): row for k, row in by_k.items()}
                      for policy, by_k in table.items()} for dataset, table in tables.items()}


def recall_table(dataset: str, tmp: Path, reranker: str = "", top_n: int = 20
                 ) -> dict[str, dict[int, dict[str, int]]]:
    """``{policy: {k: {lang: questions found}}}`` for one bundled set."""
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.fusion import FusionConfig
    from calm_rag.retrieval.retriever import Retriever, question_query
    from calm_rag.retrieval.spec import load_spec

    spec = load_spec(REPO / "indexes" / f"{dataset}-demo.yaml")
    build_index(spec, tmp, progress=False)
    retriever = Retriever.open(spec.name, index_dir=tmp)
    questions = load_bundled(dataset)
    qrels = read_qrels(DATA / f"{dataset}_qrels.jsonl")
    missing = [q.id for q in questions if q.id not in qrels]
    if missing:
        raise SystemExit(f"{dataset}: no qrel for {', '.join(missing[:5])}")
    queries = [question_query(q) for q in questions]
    english = {q.id: question_query(q) for q in questions if q.lang == "en"}
    pivots = [english[q.id] for q in questions]
    top = max(RECALL_KS)
    # The fused ranking does not depend on k (its depth is at least 100), so the top 10 of one
    # search give every k.
    table = {}
    for name, policy, hybrid in [("native", "native", False), ("pivot", "pivot", False),
                                 ("fused", "fused", False), ("fused +bm25", "fused", True)]:
        found = retriever.retrieve_many(queries, pivots, k=top, policy=policy, hybrid=hybrid)
        table[name] = found_at(questions, [[h.chunk.doc_id for h in hits] for hits in found],
                               qrels)
    # The fusion before: its candidate depth grew with k, so each k is its own ranking.
    rankings = retriever.dense_rankings(list(dict.fromkeys(queries + pivots)),
                                        max(4 * top, 20))
    by_text = dict(zip(dict.fromkeys(queries + pivots), rankings, strict=True))
    before: dict[int, dict[str, int]] = {}
    for k in RECALL_KS:
        old = FusionConfig(combine="rrf", depth=max(4 * k, 20), rrf_k=60)
        docs = [[retriever.chunks[row].doc_id for row, _ in (
            old.fuse([by_text[q], by_text[p]]) if q != p else by_text[q])[:k]]
            for q, p in zip(queries, pivots, strict=True)]
        before[k] = found_at(questions, docs, qrels)[k]
    table["fused rrf60 (before)"] = before
    if reranker:
        table.update(reranked_found(retriever, questions, qrels, queries, pivots, reranker,
                                    top_n))
    table["questions"] = {0: {lang: sum(q.lang == lang for q in questions)
                              for lang in {q.lang for q in questions}}}
    return table


def reranked_found(retriever, questions, qrels, queries: list[str], pivots: list[str],
                   reranker: str, top_n: int) -> dict[str, dict[int, dict[str, int]]]:
    """Native and fused, their first ``top_n`` reordered by the CrossEncoder as the retrieve
    stage does (the question in its own language; ``calm_rag.retrieval.rerank``)."""
    from calm_rag.retrieval.rerank import Reranker

    model = Reranker.load(reranker)
    found = {}
    for policy in ("native", "fused"):
        hits = retriever.retrieve_many(queries, pivots, k=max(top_n, max(RECALL_KS)),
                                       policy=policy)
        ranked = model.rerank_many(queries, [[h.to_dict() for h in group] for group in hits],
                                   top_n=top_n, k=max(RECALL_KS))
        found[f"{policy} +rerank"] = found_at(
            questions, [[h["doc_id"] for h in group] for group in ranked], qrels)
    return found


def read_qrels(path: Path) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            qrels.setdefault(row["question_id"], set()).add(row["passage_id"])
    return qrels


def found_at(questions, ranked_docs: list[list[str]], qrels: dict[str, set[str]]
             ) -> dict[int, dict[str, int]]:
    """``{k: {lang: questions with a relevant passage in their top k}}``."""
    found: dict[int, dict[str, int]] = {k: {} for k in RECALL_KS}
    for question, docs in zip(questions, ranked_docs, strict=True):
        for k in RECALL_KS:
            hit = bool(set(docs[:k]) & qrels[question.id])
            found[k][question.lang] = found[k].get(question.lang, 0) + hit
    return found


def recall_markdown(dataset: str, table: dict[str, dict[int, dict[str, int]]]) -> list[str]:
    """One set's tables: k = 1, 3, 5, 10 first (README's), then every k, then the worst gap."""
    count = table.pop("questions")[0]
    langs = sorted(count)
    header = ["| k | policy | " + " | ".join(langs) + " |", "|---|---|" + "---|" * len(langs)]

    def rows(ks) -> list[str]:
        return [f"| {k} | {policy} | " + " | ".join(
            f"{by_k[k][lang] / count[lang]:.2f}" for lang in langs) + " |"
            for k in ks for policy, by_k in table.items()]

    sizes = ", ".join(f"{count[lang]} {lang}" for lang in langs)
    gap = worst_gap_line(table, langs)
    return [f"## {dataset}: recall@k, k = 1, 3, 5, 10 ({sizes} questions)", "", *header,
            *rows((1, 3, 5, 10)), "", gap, "",
            f"## {dataset}: recall@k, every k", "", *header, *rows(RECALL_KS), "", gap, ""]


def worst_gap_line(table: dict[str, dict[int, dict[str, int]]], langs: list[str]) -> str:
    """The acceptance's figure: the worst fused - max(native, pivot) over every k and
    language, in questions, for the default fusion, the one before and reranked fusion."""
    def worst(name: str) -> str:
        gaps = [(table[name][k][lang] - max(table["native"][k][lang], table["pivot"][k][lang]),
                 k, lang) for k in RECALL_KS for lang in langs]
        low = min(gaps)
        return (f"{low[0]:+d} questions (k = {low[1]}, {low[2]}), cells below: "
                f"{sum(g < 0 for g, _, _ in gaps)}")

    cells = len(RECALL_KS) * len(langs)
    line = (f"Worst fused - max(native, pivot) over all {cells} cells (k = 1..{max(RECALL_KS)}, "
            f"{len(langs)} languages): {worst('fused')}. The fusion before: "
            f"{worst('fused rrf60 (before)')}.")
    if "fused +rerank" in table:
        line += f" Fused +rerank: {worst('fused +rerank')}."
    return line


# --------------------------------------------------------------------------- synthetic ANN


def clustered_vectors(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray,
                      spread: float) -> np.ndarray:
    """Unit vectors around topic centers (real embeddings cluster by topic); ``spread`` is the
    noise's length relative to a center's: 0.6 gives tight topics, 1.5 nearly uniform ones,
    the hard case for any approximate index."""
    labels = rng.integers(0, len(centers), n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    x = centers[labels] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


ANN_FACTORIES = (("Flat", {}), ("HNSW32", {"ef_search": 128}), ("IVF1024,Flat", {"nprobe": 32}))


def bench_ann(size: int, n_queries: int, dim: int = 384, k: int = 10) -> dict:
    results = {}
    for name, spread in (("clustered", 0.6), ("diffuse", 1.5)):
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((2000, dim), dtype=np.float32) / np.sqrt(dim)
        base = clustered_vectors(size, dim, rng, centers, spread)
        queries = clustered_vectors(n_queries, dim, rng, centers, spread)
        print(f"\nANN ({name}, spread {spread}): {size} synthetic unit vectors (dim {dim}), "
              f"{n_queries} queries, recall@{k} against Flat", flush=True)
        results[name] = ann_on(base, queries, k)
    return results


def ann_on(base: np.ndarray, queries: np.ndarray, k: int) -> dict:
    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.spec import FaissConfig

    results, truth, flat_search = {}, None, 1.0
    for factory, extra in ANN_FACTORIES:
        config = FaissConfig(factory=factory, metric="ip", **extra)
        index = faiss_index.make_index(config, base.shape[1])
        started = time.perf_counter()
        faiss_index.train(index, config, base)
        index.add(base)
        faiss_index.configure_search(index, config)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        _, rows = faiss_index.search(index, queries, k, "ip")
        search_s = time.perf_counter() - started
        if truth is None:
            truth, flat_search = rows, search_s
        recall = recall_at(rows, truth, k)
        results[factory] = {"build_s": round(build_s, 2), "search_s": round(search_s, 3),
                            "qps": round(len(queries) / search_s),
                            "recall_at_10": round(float(recall), 4),
                            "speedup_vs_flat": round(flat_search / search_s, 2), **extra}
        print(f"  {factory:<13} build {build_s:6.1f} s  search {search_s:6.3f} s "
              f"({len(queries) / search_s:8.0f} q/s)  recall@{k} {recall:.4f}  "
              f"speed-up x{flat_search / search_s:5.1f}", flush=True)
    return results


def recall_at(rows: np.ndarray, truth: np.ndarray, k: int) -> float:
    """The share of the exact top ``k`` that the approximate top ``k`` found."""
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(rows, truth, strict=True)]))


# --------------------------------------------------------------------------- real text, 100k

REAL_MODEL = "all-MiniLM-L6-v2"  # the fast local English model: the gathered text is English
REAL_CHUNKING = {"chunk_size": 64, "chunk_overlap": 8}
REAL_BATCH = 128
REAL_NAME = "real"
# (factory, its search setting, the value it is built with, the values tried at search time):
# the built-in value is calm_rag's default; the others show the recall/speed trade.
REAL_INDEXES = (("Flat", None, None, ()),
                ("HNSW32", "ef_search", 128, (64, 128, 256, 512)),
                ("IVF1024,Flat", "nprobe", 16, (16, 32, 64, 128)))
EXTRA_HNSW = "HNSW32 efConstr 200"  # built outside calm_rag, which leaves FAISS's 40
EXTRA_EF_CONSTRUCTION = 200
EXTRA_HNSW_TRIED = (64, 128, 256)
SINGLE_QUERIES = 200  # also timed one query at a time (Flat: 6 ms each)
DOC_SUFFIXES = (".txt", ".md", ".rst")
DOC_NAMES = ("readme", "license", "copying", "copyright", "notice", "news", "changelog",
             "authors", "changes", "history")
CODE_LINE = re.compile(r"^(>>>|\.\.\.|\$ |[-=~^*#`_+.]{3,}$)")  # doctests, prompts, rules
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A document's first paragraphs up to this length: a 270 kB NEWS file would otherwise stand for
# thousands of near-alike chunks, and the last document would overshoot the size by as many.
MAX_DOC_CHARS = 6000


def bench_real(args: argparse.Namespace) -> dict:
    from calm_rag.models import home

    folder = args.real_dir or home() / "bench" / f"real-{args.real_size}"
    corpus, queries, meta = prepare_real_corpus(folder, args.real_size, args.real_queries)
    print(f"\nreal text: {meta['chunks']} distinct chunks ({REAL_CHUNKING['chunk_size']} tokens, "
          f"overlap {REAL_CHUNKING['chunk_overlap']}) of {meta['documents']} documents "
          f"({meta['characters'] / 1e6:.1f} M characters; {meta['sources']}), "
          f"{len(queries)} held-out queries; corpus in {corpus}", flush=True)
    out = folder / "indexes"
    shutil.rmtree(out, ignore_errors=True)  # nothing reused from an earlier run
    builds = {}
    for i, (factory, key, value, _) in enumerate(REAL_INDEXES):
        # The Flat build embeds and keeps its shards; the ANN builds reuse them.
        keep = i < len(REAL_INDEXES) - 1
        setting = {key: value} if key else {}
        builds[factory] = build_in_child(real_spec(factory, setting, corpus), out, keep)
        (out / REAL_NAME).rename(out / index_folder(factory))
    searches = compare_indexes(out, queries)
    shutil.rmtree(out)  # kept when something failed, to look at
    return {"corpus": meta, "builds": builds, "searches": searches}


def real_spec(factory: str, setting: dict, corpus: Path) -> dict:
    return {"name": REAL_NAME, "corpus": [{"type": "jsonl", "path": str(corpus)}],
            "chunking": REAL_CHUNKING,
            "embedder": {"model": REAL_MODEL, "batch_size": REAL_BATCH, "normalize": True},
            "faiss": {"factory": factory, "metric": "ip", **setting}}


def index_folder(factory: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", factory).strip("-")


# Gathering the corpus ------------------------------------------------------------------------


def prepare_real_corpus(folder: Path, size: int, n_queries: int) -> tuple[Path, list[str], dict]:
    """A JSONL corpus of ``size`` distinct chunks and ``n_queries`` held-out queries, made once
    and cached in ``folder`` (gathering and chunking take minutes).

    Documents are taken in a fixed pseudo-random order, so every source is represented. The
    first ``n_queries`` documents with a usable first sentence are held out and that sentence
    is a query (related passages are indexed, the passage itself is not). A later document is
    indexed only if none of its paragraphs was seen before and all of its chunks (cut by the
    very splitter the build uses) are new, until ``size`` chunks.
    """
    from calm_rag.retrieval.chunking import make_splitter
    from calm_rag.retrieval.embedder import Embedder
    from calm_rag.retrieval.spec import ChunkingConfig

    corpus, meta_path = folder / "corpus.jsonl", folder / "corpus.json"
    wanted = {"size": size, "queries": n_queries, "model": REAL_MODEL,
              "max_doc_chars": MAX_DOC_CHARS, **REAL_CHUNKING}
    if corpus.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["wanted"] == wanted:
            return corpus, meta.pop("query_texts"), meta
    print(f"gathering real text for {size} chunks (once; cached in {folder})", flush=True)
    started = time.perf_counter()
    documents = sorted(real_documents(), key=lambda doc: stable_hash(doc[0]))
    splitter = make_splitter(ChunkingConfig(**REAL_CHUNKING), Embedder.load(REAL_MODEL).tokenize)
    folder.mkdir(parents=True, exist_ok=True)
    with corpus.open("w", encoding="utf-8") as handle:
        picked = pick_documents(documents, splitter, size, n_queries)
        for doc in picked["documents"]:
            handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    meta = {"wanted": wanted, "chunks": picked["chunks"], "documents": len(picked["documents"]),
            "characters": sum(len(doc["text"]) for doc in picked["documents"]),
            "sources": picked["sources"], "gathered_s": round(time.perf_counter() - started)}
    meta_path.write_text(json.dumps({**meta, "query_texts": picked["queries"]}, indent=1),
                         encoding="utf-8")
    return corpus, picked["queries"], meta


def pick_documents(documents: list[tuple[str, str, str]], splitter, size: int,
                   n_queries: int) -> dict:
    from calm_rag.retrieval.chunking import chunk_documents
    from calm_rag.retrieval.corpora import Document

    seen_paragraphs: set[bytes] = set()
    seen_chunks: set[bytes] = set()
    picked: list[dict] = []
    queries: list[str] = []
    sources: dict[str, int] = {}
    copies: dict[str, int] = {}
    for doc_id, title, text in documents:
        if len(seen_chunks) >= size:
            break
        paragraphs = leading(prose_paragraphs(text), MAX_DOC_CHARS)
        keys = [stable_hash(p.lower()) for p in paragraphs]
        if not paragraphs or seen_paragraphs.intersection(keys):
            continue
        if len(queries) < n_queries:
            if sentence := first_sentence(paragraphs[0]):
                queries.append(sentence)
                seen_paragraphs.update(keys)  # its copies elsewhere stay out of the index too
            continue
        text = "\n\n".join(paragraphs)
        document = Document(id=doc_id, lang="en", title=title, text=text, source=doc_id)
        chunks = [stable_hash(c.text) for c in chunk_documents([document], splitter)]
        if len(set(chunks)) < len(chunks) or seen_chunks.intersection(chunks):
            continue
        seen_paragraphs.update(keys)
        seen_chunks.update(chunks)
        # A property's getter and setter share a name: ids must be unique in a JSONL corpus.
        copies[doc_id] = copies.get(doc_id, 0) + 1
        unique_id = doc_id if copies[doc_id] == 1 else f"{doc_id}~{copies[doc_id]}"
        picked.append({"id": unique_id, "lang": "en", "title": title, "text": text})
        label = doc_id.split(":", 1)[0]
        sources[label] = sources.get(label, 0) + 1
    if len(seen_chunks) < size or len(queries) < n_queries:
        sys.exit(f"found only {len(seen_chunks)} distinct chunks and {len(queries)} queries")
    return {"documents": picked, "chunks": len(seen_chunks), "queries": queries,
            "sources": sources}


def real_documents() -> Iterator[tuple[str, str, str]]:
    """``(id, title, text)`` of the English prose on this machine: the docstrings of Python's
    standard library and of the installed packages, the packages' text files (licenses,
    READMEs) and the Debian packages' documentation (copyrights, changelogs, READMEs)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = Path(sysconfig.get_paths()["purelib"])
    yield from python_docstrings(stdlib, "stdlib")
    yield from python_docstrings(packages, "packages")
    yield from text_files(packages, "package-docs")
    yield from text_files(Path("/usr/share/doc"), "debian-docs")


def python_docstrings(root: Path, label: str) -> Iterator[tuple[str, str, str]]:
    import warnings

    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root)
        # The standard library's folder holds the base interpreter's own site-packages.
        if "site-packages" in relative.parts or file.stat().st_size > 2**20:
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        try:
            with warnings.catch_warnings():  # invalid escapes in old files
                warnings.simplefilter("ignore")
                tree = ast.parse(file.read_bytes())
        except (SyntaxError, ValueError, RecursionError):
            continue
        if text := ast.get_docstring(tree):
            yield f"{label}:{module}", module, text
        for qualname, text in docstrings(tree):
            yield f"{label}:{module}.{qualname}", f"{module}.{qualname}", text


def docstrings(node: ast.AST, qualname: str = "") -> Iterator[tuple[str, str]]:
    """``(qualified name, docstring)`` of the classes and functions under ``node``, also those
    defined inside ``if``/``try`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{qualname}.{child.name}" if qualname else child.name
            if text := ast.get_docstring(child):
                yield name, text
            yield from docstrings(child, name)
        elif isinstance(child, (ast.stmt, ast.excepthandler)):
            yield from docstrings(child, qualname)


def text_files(root: Path, label: str) -> Iterator[tuple[str, str, str]]:
    for file in sorted(root.rglob("*")):
        name = file.name.lower().removesuffix(".gz")
        if not (name.endswith(DOC_SUFFIXES) or name.startswith(DOC_NAMES)) or not file.is_file():
            continue
        if text := read_text_file(file):
            relative = file.relative_to(root).as_posix().removesuffix(".gz")
            yield f"{label}:{relative}", relative.replace("/", " "), text


def read_text_file(file: Path) -> str | None:
    """The file's text (gunzipped), or None when it is big or not UTF-8 (data, not prose)."""
    if file.stat().st_size > 2**21:
        return None
    try:
        raw = file.read_bytes()
        return (gzip.decompress(raw) if file.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs that read as prose, whitespace collapsed: code examples, rules, tables of
    short cells, word lists and number dumps are dropped."""
    text = inspect.cleandoc(text)
    kept = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        lines = [line for line in lines if line and not CODE_LINE.match(line)]
        words = " ".join(lines).split()
        if len(words) < 5 or len(words) < 3 * len(lines):  # lists: a word or two a line
            continue
        letters = sum(ch.isalpha() for word in words for ch in word)
        if letters >= 0.6 * sum(len(word) for word in words):
            kept.append(" ".join(words))
    return kept


def leading(paragraphs: list[str], limit: int) -> list[str]:
    """The first paragraphs, as many as fit in ``limit`` characters (at least one)."""
    total = 0
    for n, paragraph in enumerate(paragraphs):
        total += len(paragraph)
        if total > limit:
            return paragraphs[:max(n, 1)]
    return paragraphs


def first_sentence(paragraph: str) -> str | None:
    """A query: the paragraph's first sentence when it is a real one (6 to 40 words)."""
    sentence = SENTENCE_END.split(paragraph, maxsplit=1)[0]
    return sentence if 6 <= len(sentence.split()) <= 40 else None


def stable_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).digest()


# Building, in a fresh process each -----------------------------------------------------------


def build_in_child(spec: dict, out: Path, keep: bool) -> dict:
    """Build in a fresh process, so that its peak memory is the build's own."""
    factory = spec["faiss"]["factory"]
    print(f"  building {factory} ...", flush=True)
    job = json.dumps({"spec": spec, "out": str(out), "keep": keep})
    env = {**os.environ, "TQDM_MININTERVAL": "30"}  # progress bars in a log: a line per 30 s
    done = subprocess.run([sys.executable, __file__, "--build-child", job], env=env,
                          stdout=subprocess.PIPE, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    rate = (f"embedded {figures['chunks']} chunks in {figures['embed_s']:.0f} s "
            f"({figures['chunks'] / figures['embed_s']:.1f} chunks/s)"
            if figures["embedded_shards"] else f"reused {figures['reused_shards']} shards")
    print(f"  {factory:<13} build {figures['build_s']:7.1f} s ({rate}); RSS after loading the "
          f"model {figures['baseline_mb']:.0f} MB, peak {figures['peak_mb']:.0f} MB "
          f"(+{figures['peak_mb'] - figures['baseline_mb']:.0f} MB); index "
          f"{figures['index_mb']:.0f} MB", flush=True)
    return figures


def build_child(job: dict) -> None:
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.embedder import Embedder
    from calm_rag.retrieval.spec import spec_from_dict

    spec = spec_from_dict(job["spec"])
    # Loaded and hashed before the baseline (build_index gets both from the process's cache):
    # the peak's increase over the baseline is then the build's own memory.
    Embedder.load(spec.embedder.model).fingerprint  # noqa: B018
    embedding = time_calls(Embedder, "embed_documents")
    baseline = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    started = time.perf_counter()
    result = build_index(spec, job["out"], keep_embeddings=job["keep"])
    print(json.dumps({
        "chunks": result.chunks, "build_s": round(time.perf_counter() - started, 1),
        "embed_s": round(embedding[0], 1), "embedded_shards": result.embedded_shards,
        "reused_shards": result.reused_shards, "baseline_mb": round(baseline),
        "peak_mb": round(rss_mb("VmHWM")),
        "index_mb": round((result.path / "index.faiss").stat().st_size / 2**20)}))


def time_calls(cls: type, name: str) -> list[float]:
    """Wrap ``cls.name`` so that the seconds spent in it add up in the returned list's item."""
    spent = [0.0]
    original = getattr(cls, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    setattr(cls, name, timed)
    return spent


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# Searching ------------------------------------------------------------------------------------


def compare_indexes(out: Path, queries: list[str], k: int = 10, repeat: int = 3) -> list[dict]:
    """recall@k of each index and setting against Flat, and its search speed-up: the best of
    ``repeat`` interleaved runs, both for all queries in one batch and for the first
    ``SINGLE_QUERIES`` one at a time. The queries are embedded once: only search is timed."""
    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.retriever import Retriever
    from calm_rag.retrieval.spec import FaissConfig

    opened = {factory: Retriever.open(out / index_folder(factory))
              for factory, *_ in REAL_INDEXES}
    flat = opened["Flat"]
    describe_chunks(flat)
    started = time.perf_counter()
    vectors = flat.embedder.embed_queries(queries)
    encode_s = time.perf_counter() - started
    print(f"  {len(queries)} queries embedded once in {encode_s:.1f} s "
          f"({len(queries) / encode_s:.0f} q/s), not counted below", flush=True)
    indexes = {factory: retriever.index for factory, retriever in opened.items()}
    indexes[EXTRA_HNSW] = deeper_hnsw(flat.index)
    runs = [("Flat", "Flat", {})]
    runs += [(factory, factory, {key: value}) for factory, key, _, tried in REAL_INDEXES if key
             for value in tried]
    runs += [(EXTRA_HNSW, "HNSW32", {"ef_search": value}) for value in EXTRA_HNSW_TRIED]
    batch: dict[int, float] = {}
    single: dict[int, float] = {}
    rows: dict[int, np.ndarray] = {}
    for _ in range(repeat):
        for i, (label, factory, setting) in enumerate(runs):
            index = indexes[label]
            faiss_index.configure_search(index, FaissConfig(factory=factory, **setting))
            seconds, rows[i] = timed_search(index, vectors, k)
            batch[i] = min(batch.get(i, np.inf), seconds)
            # One query a time, as Retriever.retrieve asks: Flat cannot batch its scan into
            # a matrix product then, so this is where an approximate index saves most.
            seconds = sum(timed_search(index, vectors[j:j + 1], k)[0]
                          for j in range(min(SINGLE_QUERIES, len(vectors))))
            single[i] = min(single.get(i, np.inf), seconds)
    return report_searches(runs, batch, single, rows, len(queries), k)


def describe_chunks(flat) -> None:
    texts = [chunk.text for chunk in flat.chunks]
    tokens = np.mean([flat.embedder.count_tokens(text) for text in texts])
    print(f"  indexed chunks {flat.index.ntotal} ({len(set(texts))} distinct texts), on average "
          f"{tokens:.0f} tokens ({np.mean([len(t) for t in texts]):.0f} characters)", flush=True)


def deeper_hnsw(flat_index) -> object:
    """HNSW32 with efConstruction 200 instead of FAISS's default 40, filled with the Flat
    index's vectors: calm_rag's spec cannot set efConstruction, and this shows what it would
    buy (a better graph for a slower build)."""
    import faiss

    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.spec import FaissConfig

    vectors = flat_index.reconstruct_n(0, flat_index.ntotal)
    index = faiss_index.make_index(FaissConfig(factory="HNSW32"), flat_index.d)
    faiss.downcast_index(index).hnsw.efConstruction = EXTRA_EF_CONSTRUCTION
    started = time.perf_counter()
    index.add(vectors)
    print(f"  {EXTRA_HNSW} (extra, outside calm_rag) built from the Flat vectors in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return index


def timed_search(index, vectors: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    from calm_rag.retrieval import faiss_index

    started = time.perf_counter()
    _, rows = faiss_index.search(index, vectors, k, "ip")
    return time.perf_counter() - started, rows


def report_searches(runs: list[tuple[str, str, dict]], batch: dict[int, float],
                    single: dict[int, float], rows: dict[int, np.ndarray], n_queries: int,
                    k: int) -> list[dict]:
    n_single = min(SINGLE_QUERIES, n_queries)
    print(f"  {'index':<20} {'setting':<13} {'recall@' + str(k):>9}  {n_queries} queries "
          f"batched: time, speed-up  {n_single} one at a time: per query, speed-up")
    out = []
    for i, (label, factory, setting) in enumerate(runs):
        recall = recall_at(rows[i], rows[0], k)  # runs[0] is Flat: exact
        name = ", ".join(f"{key} {value}" for key, value in setting.items()) or "exact"
        figures = {f"recall_at_{k}": round(recall, 4), "batch_s": round(batch[i], 4),
                   "batch_speedup": round(batch[0] / batch[i], 2),
                   "single_ms": round(1000 * single[i] / n_single, 3),
                   "single_speedup": round(single[0] / single[i], 2)}
        print(f"  {label:<20} {name:<13} {recall:9.4f}  {batch[i]:19.3f} s  "
              f"x{figures['batch_speedup']:5.1f}  {figures['single_ms']:28.2f} ms  "
              f"x{figures['single_speedup']:5.1f}", flush=True)
        out.append({"index": label, "factory": factory, **setting, **figures})
    return out


if __name__ == "__main__":
    options = parse_args()
    if options.build_child:
        build_child(json.loads(options.build_child))
    elif options.scale_child:
        from retrieval_scale import child

        print(json.dumps(child(json.loads(options.scale_child))))
    else:
        main()
