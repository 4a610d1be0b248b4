"""``bench/retrieval.py --sections scale``: calm_rag's index at 100k and 1M chunks, and MedCorp.

Each size is built through ``build_index`` (chunk store, embedding shards, IVF-PQ trained on a
sample and filled shard by shard, manifest with checksums) in a fresh process, and opened in
another, so each peak RSS (``resource.getrusage`` maxrss) is that step's own. The vectors are
synthetic (clustered unit vectors, dim 384, the shape of multilingual-e5-small's embeddings),
served by a stand-in embedder that looks each chunk's vector up by its title; the chunk texts
are real bundled sentences. The embedding rate is measured apart, on real bundled text with
the real model. Flat's exact top-10 of 1 000 held-out query vectors is the recall reference.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "calm_rag" / "retrieval" / "data"
DIM = 384
K = 10
QUERIES = 1000
SINGLE = 200  # queries timed one at a time
MEDCORP = 54_200_000
VECTORS_ENV = "CALM_RAG_BENCH_VECTORS"


def factory_for(size: int) -> tuple[str, int]:
    """IVF-PQ with about 4 sqrt(n) lists, 96-byte PQ codes and an SQ8 re-rank of 8x the hits:
    PQ alone (even 192 bytes) stays near 0.84 recall@10 on these vectors, whose neighbours
    are close together; re-ranking 50 PQ candidates exactly gives 1.0."""
    nlist = 1024 if size <= 200_000 else 4096
    return f"IVF{nlist},PQ96,Refine(SQ8)", 64


class SyntheticEmbedder:
    """Stands in for the model: chunk ``s<i>``'s vector is row i of a memory-mapped file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = "synthetic-384"
        self.location = path
        self.normalize, self.batch_size = True, 256
        self.dimension, self.max_seq_length = DIM, 512
        self.document_prompt = self.query_prompt = ""
        self.fingerprint = "synthetic-" + Path(path).stem

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        rows = [int(t.split("\n", 1)[0][1:]) for t in texts]
        # Mapped for this call only: pages of a map kept open would count in the build's RSS
        # as if calm_rag held every vector.
        vectors = np.load(self.path, mmap_mode="r")
        return np.ascontiguousarray(vectors[rows], dtype=np.float32)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError("the bench searches with vectors")

    def on_gpus(self):
        import contextlib

        return contextlib.nullcontext(0)

    def identity(self) -> dict:
        return {"name": self.name, "location": self.location, "fingerprint": self.fingerprint,
                "dimension": DIM, "max_seq_length": 512, "document_prompt": "",
                "query_prompt": "", "normalize": True}


def _patch_embedder() -> None:
    from calm_rag.retrieval import embedder

    synthetic = SyntheticEmbedder(os.environ[VECTORS_ENV])
    embedder.Embedder.load = classmethod(lambda cls, *a, **k: synthetic)  # type: ignore


def maxrss_mb() -> float:
    """This process's peak RSS. Linux keeps ``getrusage``'s maxrss across exec, so a child
    would start from its parent's size: the peak of this process's own memory map (VmHWM)
    is read where there is one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --------------------------------------------------------------------------- data


def sentences() -> list[tuple[str, str]]:
    """(sentence, lang) of the bundled corpora: the chunk texts, reused round-robin."""
    out = []
    for name in ("medical_corpus.jsonl", "commonsense_corpus.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            for part in re.split(r"(?<=[.!?。])\s*", doc["text"]):
                if len(part) > 40:
                    out.append((part, doc.get("lang", "en")))
    return out


def prepare(folder: Path, size: int) -> tuple[Path, Path, Path]:
    """The corpus (one snippet a line), the vectors and the held-out queries of one size."""
    sys.path.insert(0, str(REPO / "bench"))
    from retrieval import clustered_vectors

    folder.mkdir(parents=True, exist_ok=True)
    corpus, vectors, queries = folder / "corpus.jsonl", folder / "vectors.npy", folder / "q.npy"
    if corpus.is_file() and vectors.is_file() and queries.is_file():
        return corpus, vectors, queries
    pool = sentences()
    with corpus.open("w", encoding="utf-8") as handle:
        for i in range(size):
            text, lang = pool[i % len(pool)]
            handle.write(json.dumps({"id": f"s{i}", "title": f"s{i}", "lang": lang,
                                     "text": f"{text} ({i})"}, ensure_ascii=False) + "\n")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((2000, DIM), dtype=np.float32) / np.sqrt(DIM)
    out = np.lib.format.open_memmap(vectors, "w+", np.float32, (size, DIM))
    for start in range(0, size, 100_000):
        stop = min(size, start + 100_000)
        out[start:stop] = clustered_vectors(stop - start, DIM, rng, centers, 0.6)
    out.flush()
    np.save(queries, clustered_vectors(QUERIES, DIM, np.random.default_rng(1), centers, 0.6))
    return corpus, vectors, queries


def exact_top(vectors: Path, queries: np.ndarray) -> np.ndarray:
    """Flat's top-K by brute force in blocks (the recall reference)."""
    base = np.load(vectors, mmap_mode="r")
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(base), 200_000):
        scores = queries @ np.asarray(base[start:start + 200_000]).T
        s = np.concatenate([best_s, scores], axis=1)
        i = np.concatenate([best_i, np.arange(start, start + scores.shape[1])[None].repeat(
            len(queries), 0)], axis=1)
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


# --------------------------------------------------------------------------- children


def child(job: dict) -> dict:
    """One step in this fresh process: ``build``, ``open`` (+ queries) or ``flat``."""
    os.environ[VECTORS_ENV] = job["vectors"]
    if job["step"] == "flat":
        return flat_latency(job)
    _patch_embedder()
    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.retriever import Retriever
    from calm_rag.retrieval.spec import spec_from_dict

    baseline = maxrss_mb()
    started = time.perf_counter()
    if job["step"] == "build":
        spec = spec_from_dict(job["spec"])
        result = build_index(spec, job["out"], progress=False)
        return {"build_s": round(time.perf_counter() - started, 1), "chunks": result.chunks,
                "baseline_mb": round(baseline), "peak_mb": round(maxrss_mb())}
    retriever = Retriever.open(Path(job["out"]) / job["name"])
    open_s = time.perf_counter() - started
    peak_open = maxrss_mb()
    queries = np.load(job["queries"])
    rows = np.zeros((len(queries), K), dtype=np.int64)
    _, rows[:] = faiss_index.search(retriever.index, queries, K, "ip")  # batch: for recall
    times, search_times = [], []
    for q in queries[:SINGLE]:
        t = time.perf_counter()
        _, found = faiss_index.search(retriever.index, q[None], K, "ip")
        search_times.append(time.perf_counter() - t)
        retriever.chunks.get([r for r in found[0] if r >= 0])  # the hits' texts, from disk
        times.append(time.perf_counter() - t)
    files = {p.name: p.stat().st_size for p in retriever.folder.iterdir()}
    np.save(job["rows"], rows)
    return {"open_s": round(open_s, 3), "baseline_mb": round(baseline),
            "open_peak_mb": round(peak_open), "after_queries_mb": round(maxrss_mb()),
            "latency_ms": round(1000 * float(np.median(search_times)), 3),
            "with_texts_ms": round(1000 * float(np.median(times)), 3), "files": files}


def flat_latency(job: dict) -> dict:
    import faiss

    base = np.load(job["vectors"], mmap_mode="r")
    index = faiss.IndexFlatIP(DIM)
    for start in range(0, len(base), 200_000):
        index.add(np.ascontiguousarray(base[start:start + 200_000]))
    queries = np.load(job["queries"])
    times = []
    for q in queries[:50]:
        t = time.perf_counter()
        index.search(q[None], K)
        times.append(time.perf_counter() - t)
    return {"flat_latency_ms": round(1000 * float(np.median(times)), 2)}


def run_child(job: dict) -> dict:
    # One thread: on a shared 2-core machine OpenMP threads spin against each other; Flat
    # and IVF-PQ are timed alike.
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "retrieval.py"),
                           "--scale-child", json.dumps(job)], env=env, check=True,
                          stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the section


def bench_scale(sizes: list[int], work: Path) -> dict:
    results: dict = {"sizes": {}}
    for size in sizes:
        print(f"\nscale: {size} chunks", flush=True)
        folder = work / f"n{size}"
        corpus, vectors, queries = prepare(folder, size)
        factory, nprobe = factory_for(size)
        spec = {"name": "scale", "corpus": [{"type": "jsonl", "path": str(corpus)}],
                "chunking": {"split": False, "chunk_size": 256},
                "embedder": {"model": "synthetic-384", "shard_size": 20_000},
                # train_size left out: what the factory needs (IVF4096: FAISS's 39 a list).
                "faiss": {"factory": factory, "metric": "ip", "nprobe": nprobe, "k_factor": 8},
                "bm25": False}
        common = {"vectors": str(vectors), "queries": str(queries), "out": str(folder / "idx"),
                  "name": "scale", "rows": str(folder / "rows.npy")}
        build = run_child({**common, "step": "build", "spec": spec})
        print(f"  build {build}", flush=True)
        opened = run_child({**common, "step": "open"})
        flat = run_child({**common, "step": "flat"})
        truth = exact_top(vectors, np.load(queries))
        rows = np.load(folder / "rows.npy")
        recall = float(np.mean([len(set(a) & set(b)) / K
                                for a, b in zip(rows, truth, strict=True)]))
        files = opened.pop("files")
        entry = {"factory": factory, "nprobe": nprobe, **build, **opened, **flat,
                 "recall_at_10": round(recall, 4),
                 "faiss_mb": round(files["index.faiss"] / 2**20, 1),
                 "bytes_per_chunk": round(sum(files.values()) / size, 1),
                 "faiss_bytes_per_chunk": round(files["index.faiss"] / size, 1),
                 "store_bytes_per_chunk": round((files["chunks.arrow"]
                                                 + files["chunk_langs.npy"]) / size, 1)}
        entry["open_beyond_index_mb"] = round(entry["open_peak_mb"] - entry["baseline_mb"]
                                              - entry["faiss_mb"], 1)
        entry["speedup_vs_flat"] = round(entry["flat_latency_ms"] / entry["latency_ms"], 1)
        print(f"  {json.dumps(entry)}", flush=True)
        results["sizes"][size] = entry
    results["embedding"] = embedding_rate()
    results["cpu"] = cpu_flags()
    if len(sizes) >= 2:
        small, large = sorted(sizes)[0], sorted(sizes)[-1]
        results["medcorp"] = medcorp_sizing(results["sizes"][small], results["sizes"][large],
                                            results["embedding"], small, large)
        print(f"\nMedCorp ({MEDCORP} snippets): {json.dumps(results['medcorp'])}")
    return results


def embedding_rate(model: str = "multilingual-e5-small", count: int = 512) -> dict:
    """Chunks a second embedded by the real model on real bundled snippets (this CPU)."""
    from calm_rag.retrieval.embedder import Embedder

    embedder = Embedder.load(model, batch_size=32)
    texts = [text for text, _ in sentences()][:count]
    embedder.embed_documents(texts[:32])  # warm-up
    started = time.perf_counter()
    embedder.embed_documents(texts)
    seconds = time.perf_counter() - started
    chars = float(np.mean([len(t) for t in texts]))
    return {"model": model, "chunks": len(texts), "mean_chars": round(chars),
            "chunks_per_s": round(len(texts) / seconds, 1)}


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    flags = sorted({f for f in wanted if re.search(rf"\b{f}\b", text)})
    return f"{os.cpu_count()} cores, {' '.join(flags)}"


# --------------------------------------------------------------------------- MedCorp


# Published GPU figure used below (not measured here: no GPU on this machine): the
# sentence-transformers model table (sbert.net, "Pretrained Models") gives all-MiniLM-L12-v2,
# the same 12-layer, 384-wide shape as multilingual-e5-small, 7 500 sentences/s on one V100.
# MedCorp snippets are passages, several sentences long: the rate is divided by LONGER.
PUBLISHED_GPU_RATE = 7500.0
LONGER = 4.0


def medcorp_sizing(small: dict, large: dict, embedding: dict, size_small: int,
                   size_large: int) -> dict:
    """MedCorp (54.2M snippets) from the measured figures of the two sizes."""
    per_chunk_s = (large["build_s"] - small["build_s"]) / (size_large - size_small)
    codes_gb = large["faiss_bytes_per_chunk"] * MEDCORP / 1e9
    gpu_rate = PUBLISHED_GPU_RATE / LONGER
    return {
        "disk_gb": round(large["bytes_per_chunk"] * MEDCORP / 1e9, 1),
        "faiss_gb": round(codes_gb, 1),
        "store_gb": round(large["store_bytes_per_chunk"] * MEDCORP / 1e9, 1),
        # Opening: the index's bytes (or none resident with faiss.on_disk) plus the constant.
        "open_ram_gb": round(codes_gb + large["open_peak_mb"] / 1e3, 1),
        "build_ram_gb": round(codes_gb + (large["peak_mb"] - large["faiss_mb"]) / 1e3, 1),
        "faiss_and_store_h_here": round(per_chunk_s * MEDCORP / 3600, 1),
        "embed_h_here": round(MEDCORP / embedding["chunks_per_s"] / 3600, 1),
        "embed_h_1_gpu_published": round(MEDCORP / gpu_rate / 3600, 1),
        "embed_h_8_gpus_published": round(MEDCORP / gpu_rate / 8 / 3600, 2),
    }
