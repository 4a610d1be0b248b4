"""Retrieval benchmark (not a test): prints figures and ratios; bench/README.md records them.

    python bench/retrieval.py                  # everything (~15 min on 2 cores)
    python bench/retrieval.py --sections build,query --repeat 3
    python bench/retrieval.py --sections ann --ann-size 100000

Sections:

* ``build``  building an index of the bundled corpora through calm_rag vs doing the same work with
  raw sentence-transformers + FAISS (same chunks, prompt, batch size, normalization, Flat index,
  chunks written). The model is loaded once and shared; calm_rag's weight fingerprint, corpus
  hashes, shards and checksums count against it.
* ``query``  query throughput: ``Retriever.retrieve_many`` / ``retrieve`` vs raw encode + search.
* ``ann``    recall@10 and speed-up of HNSW and IVF against exact (Flat) search on synthetic
  clustered unit vectors (embedding 100k real chunks takes hours on 2 cores).
* ``memory`` peak RSS of a ``build_index`` of 100k chunks (real chunking and tokenizer, real
  FAISS, shards on disk; embeddings faked by a fast hash so the run takes minutes, not hours).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "calm_rag" / "retrieval" / "data"
CORPORA = [DATA / "medical_corpus.jsonl", DATA / "commonsense_corpus.jsonl"]
SECTIONS = ("build", "query", "ann", "memory")


def main() -> None:
    args = parse_args()
    results: dict[str, dict] = {}
    sections = args.sections.split(",")
    if "build" in sections or "query" in sections:
        results.update(bench_build_and_query(args, sections))
    if "ann" in sections:
        results["ann"] = bench_ann(args.ann_size, args.ann_queries)
    if "memory" in sections:
        results["memory"] = bench_memory(args.memory_size, args.model)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side; best kept")
    parser.add_argument("--ann-size", type=int, default=100_000)
    parser.add_argument("--ann-queries", type=int, default=1000)
    parser.add_argument("--memory-size", type=int, default=100_000)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
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


# --------------------------------------------------------------------------- ANN vs Flat


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
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(rows, truth, strict=True)])
        results[factory] = {"build_s": round(build_s, 2), "search_s": round(search_s, 3),
                            "qps": round(len(queries) / search_s),
                            "recall_at_10": round(float(recall), 4),
                            "speedup_vs_flat": round(flat_search / search_s, 2), **extra}
        print(f"  {factory:<13} build {build_s:6.1f} s  search {search_s:6.3f} s "
              f"({len(queries) / search_s:8.0f} q/s)  recall@{k} {recall:.4f}  "
              f"speed-up x{flat_search / search_s:5.1f}", flush=True)
    return results


# --------------------------------------------------------------------------- memory


def bench_memory(size: int, model: str) -> dict:
    """Run the build in a fresh process so its peak memory is its own."""
    print(f"\nmemory: build_index of {size} chunks (fake embeddings) in a fresh process",
          flush=True)
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(size),
                           "--model", model], capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  RSS after imports + model {figures['baseline_mb']:.0f} MB; peak during build "
          f"{figures['peak_mb']:.0f} MB (+{figures['peak_mb'] - figures['baseline_mb']:.0f} MB); "
          f"index {figures['index_mb']:.0f} MB; {figures['chunks']} chunks in "
          f"{figures['build_s']:.0f} s", flush=True)
    return figures


def memory_child(size: int, model: str) -> None:
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.embedder import Embedder

    loaded = Embedder.load(model)
    dim = loaded.dimension
    loaded.fingerprint  # noqa: B018 (hashed before the baseline is taken)

    def fake_embed(self, texts):
        # Deterministic per text, no model call: isolates the pipeline's own memory.
        seeds = [int.from_bytes(t.encode()[-8:].rjust(8, b"\0"), "little") for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(dim, dtype=np.float32)
                        for s in seeds])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    Embedder.embed_documents = fake_embed
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        write_synthetic_corpus(corpus, size)
        spec = bench_spec(model, tmp, [corpus])
        baseline = rss_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        started = time.perf_counter()
        result = build_index(spec, tmp / "indexes", progress=False)
        figures = {"chunks": result.chunks, "build_s": round(time.perf_counter() - started, 1),
                   "baseline_mb": baseline, "peak_mb": rss_mb("VmHWM"),
                   "index_mb": (result.path / "index.faiss").stat().st_size / 2**20,
                   "shard_size": spec.embedder.shard_size}
    print(json.dumps(figures))


def write_synthetic_corpus(path: Path, size: int) -> None:
    """``size`` one-chunk documents: the bundled passages, each numbered into variants."""
    documents = read_documents()
    with path.open("w", encoding="utf-8") as handle:
        for i in range(size):
            doc = documents[i % len(documents)]
            handle.write(json.dumps({"id": f"d{i}", "lang": doc["lang"], "title": doc["title"],
                                     "text": f"{doc['text']} ({i})"}, ensure_ascii=False) + "\n")


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    options = parse_args()
    if options.memory_child:
        memory_child(options.memory_child, options.model)
    else:
        main()
