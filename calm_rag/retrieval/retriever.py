"""The retriever: top-k chunks of a built index for a question, by policy, dense or hybrid.

    retriever = Retriever.open("medical-demo")
    hits = retriever.retrieve("Quelle est la dose ...", k=5, policy="fused",
                              pivot_query="What is the dose ...", hybrid=True)

Scores: with one ranking (``native`` or ``pivot``, not hybrid) a hit's score is the similarity
(cosine for normalized ``ip`` indexes, BM25 never alone); when rankings are fused it is the fused
score of :class:`~calm_rag.retrieval.fusion.FusionConfig` (by default the sum of each list's
z-normalized scores).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.errors import InputError
from calm_rag.retrieval import faiss_index, integrity
from calm_rag.retrieval import manifest as mf
from calm_rag.retrieval.catalog import locate_index
from calm_rag.retrieval.chunk_store import ArrowChunks, ChunkReader, JsonlChunks
from calm_rag.retrieval.chunking import Chunk
from calm_rag.retrieval.embedder import Embedder
from calm_rag.retrieval.fusion import FusionConfig
from calm_rag.retrieval.language_id import language_code
from calm_rag.retrieval.policies import QUERY_POLICIES, uses_pivot
from calm_rag.retrieval.spec import FaissConfig

log = logging.getLogger(__name__)

Ranking = list[tuple[int, float]]  # (row, score), best first


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk."""

    chunk: Chunk
    score: float
    rank: int
    """1 for the best hit."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.chunk.to_dict(), "score": self.score, "rank": self.rank}


class Retriever:
    """A built index opened for search: FAISS, its chunks (on disk, read by row) and the
    embedder that built it."""

    def __init__(self, folder: Path, manifest: dict[str, Any], embedder: Embedder, index: Any,
                 chunks: ChunkReader) -> None:
        self.folder = folder
        self.manifest = manifest
        self.embedder = embedder
        self.index = index
        self.chunks = chunks
        self.metric = manifest["faiss"]["metric"]
        # Unfiltered searches run on the GPUs when the index was built for them and FAISS sees
        # some; a language filter (an ID selector) is a CPU feature.
        self._unfiltered = (faiss_index.to_gpus(index) if manifest["faiss"].get("gpu")
                            else index)
        self._rows_by_lang: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, name_or_path: str | Path, *, index_dir: str | Path | None = None,
             embedder: str | None = None, verify: bool = False) -> Retriever:
        """Open a built index after checking its files and its embedder.

        Files: sizes always, and SHA-256 whenever one changed since it was last hashed (see
        :mod:`~calm_rag.retrieval.integrity`: an unchanged index is not read again).
        ``embedder``: the embedder the caller expects (an error if the index was built with
        another); ``verify``: hash every file whatever the stamp says.
        """
        folder = locate_index(name_or_path, index_dir)
        manifest = mf.read_manifest(folder)
        integrity.check(folder, manifest, full=verify)
        built = manifest["embedder"]
        if embedder is not None:
            mf.check_asked_embedder(manifest, folder, embedder)
        index, chunks = _read_store(folder, manifest)
        # The embedder last: a damaged index fails before a model is loaded.
        loaded = Embedder.load(built["name"], normalize=built["normalize"],
                               batch_size=built.get("batch_size", 32))
        mf.check_embedder(manifest, folder, loaded.identity())
        return cls(folder, manifest, loaded, index, chunks)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def retrieve(self, query: str, lang: str | None = None, k: int = 5, policy: str = "native",
                 pivot_query: str | None = None, hybrid: bool = False,
                 fusion: FusionConfig | None = None) -> list[Hit]:
        """The top-``k`` chunks for one question (see :meth:`retrieve_many`)."""
        return self.retrieve_many([query], [pivot_query], lang=lang, k=k, policy=policy,
                                  hybrid=hybrid, fusion=fusion)[0]

    def retrieve_many(self, queries: Sequence[str],
                      pivot_queries: Sequence[str | None] | None = None, *,
                      lang: str | None = None, k: int = 5, policy: str = "native",
                      hybrid: bool = False,
                      fusion: FusionConfig | None = None) -> list[list[Hit]]:
        """Top-``k`` chunks for each query; all query texts are embedded in one batch.

        ``pivot_queries``: the parallel English question of each query (for ``pivot`` and
        ``fused``; a query without one is searched natively, and a warning counts them);
        ``lang``: only chunks in that language; ``hybrid``: add BM25 rankings; ``fusion``: how
        several rankings are merged (default :class:`FusionConfig`).
        """
        policy_fn = QUERY_POLICIES.get(policy, field="policy")
        fusion = fusion or FusionConfig()
        pivots = list(pivot_queries) if pivot_queries is not None else [None] * len(queries)
        if len(pivots) != len(queries):
            raise InputError("one pivot query per query (None where there is none)",
                             field="pivot_queries")
        _warn_missing_pivots(policy, pivots)
        texts = [policy_fn(q, p) for q, p in zip(queries, pivots, strict=True)]
        fusing = hybrid or any(len(t) > 1 for t in texts)
        depth = max(fusion.depth, k) if fusing else k
        allowed = self._allowed_rows(lang)
        unique = list(dict.fromkeys(t for group in texts for t in group))
        dense = dict(zip(unique, self.dense_rankings(unique, depth, allowed), strict=True))
        results = []
        for group in texts:
            rankings = [dense[t] for t in group]
            if hybrid:
                rankings += [self.lexical_ranking(t, depth, allowed) for t in group]
            results.append(self._hits(rankings, k, fusion))
        return results

    def dense_rankings(self, texts: Sequence[str], depth: int,
                       allowed_rows: np.ndarray | None = None) -> list[Ranking]:
        """Nearest chunks of each text by embedding similarity."""
        vectors = self.embedder.embed_queries(list(texts))
        index = self.index if allowed_rows is not None else self._unfiltered
        scores, rows = faiss_index.search(index, vectors, depth, self.metric, allowed_rows)
        return [[(int(r), float(s)) for r, s in zip(row, score, strict=True) if r >= 0]
                for row, score in zip(rows, scores, strict=True)]

    def lexical_ranking(self, text: str, depth: int,
                        allowed_rows: np.ndarray | None = None) -> Ranking:
        """Best chunks of ``text`` by BM25 (stop words of the text's detected language)."""
        allowed: np.ndarray | None = None
        if allowed_rows is not None:
            allowed = np.zeros(len(self.chunks), dtype=bool)
            allowed[allowed_rows] = True
        return self.lexical.search(text, depth, allowed)

    @cached_property
    def lexical(self) -> Any:
        """The BM25 index: the one saved with the index (memory-mapped), or, for an index
        built without it (``bm25: false``, or by an older calm_rag), one built in memory."""
        from calm_rag.retrieval.lexical import VERSION, LexicalIndex

        saved = self.manifest.get("lexical")
        if isinstance(saved, dict) and saved.get("tokenizer_version") == VERSION:
            return self._saved_lexical(LexicalIndex)
        log.info("building the BM25 index of %s in memory (%d chunks; the index has no saved "
                 "one of this version)", self.name, len(self.chunks))
        return LexicalIndex.build((c.embedding_text(True), c.lang)
                                  for batch in self.chunks.iter_batches() for c in batch)

    def _saved_lexical(self, lexical_class: Any) -> Any:
        """The saved BM25 files, read (a damaged one as one line naming the index)."""
        try:
            return lexical_class.load(self.folder)
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise InputError(f"damaged BM25 files: {err}", path=self.folder,
                             hint=mf.damaged_hint(self.manifest, self.folder)) from None

    def as_llama_retriever(self, **options: Any) -> Any:
        """This retriever as a llama-index ``BaseRetriever`` (for a query engine)."""
        from calm_rag.retrieval.llama_adapter import LlamaIndexRetriever

        return LlamaIndexRetriever(self, **options)

    def _allowed_rows(self, lang: str | None) -> np.ndarray | None:
        if lang is None:
            return None
        code = language_code(lang)
        if code not in self._rows_by_lang:
            self._rows_by_lang[code] = self.chunks.rows_in(code)
        rows = self._rows_by_lang[code]
        if len(rows) == 0:
            present = ", ".join(self.chunks.present_languages())
            raise InputError(f"the index {self.name!r} has no chunk in language {code!r}",
                             field="lang", hint=f"it has: {present}")
        return rows

    def _hits(self, rankings: list[Ranking], k: int, fusion: FusionConfig) -> list[Hit]:
        scored = rankings[0][:k] if len(rankings) == 1 else fusion.fuse(rankings)[:k]
        chunks = self.chunks.get([row for row, _ in scored])
        return [Hit(chunk, score, rank)
                for rank, (chunk, (_, score)) in enumerate(zip(chunks, scored, strict=True),
                                                           start=1)]


def _warn_missing_pivots(policy: str, pivots: Sequence[str | None]) -> None:
    """One warning when a policy that searches the pivot query is given queries without one
    (they are searched in their own language: a fallback said, never a silent one)."""
    missing = sum(1 for p in pivots if not p)
    if missing and uses_pivot(policy):
        log.warning("policy %s: %d of %d queries have no pivot query; those are searched in "
                    "their own language only (native)", policy, missing, len(pivots))


def _read_store(folder: Path, manifest: dict[str, Any]) -> tuple[Any, ChunkReader]:
    """The FAISS index and the chunk store, each checked against the manifest as it is read
    (what a checksum cannot have caught, when a stamp was fooled, fails here in one line)."""
    faiss, dimension = manifest["faiss"], manifest["embedder"]["dimension"]
    try:
        faiss_index.check_factory(faiss["factory"], dimension, faiss["metric"])
    except InputError as err:
        raise InputError(f"damaged manifest: {err.message}", path=folder / mf.MANIFEST,
                         field=err.field, hint=mf.rebuild_hint(manifest, folder)) from None
    hint = mf.damaged_hint(manifest, folder)
    index = faiss_index.read_index(folder / mf.INDEX_FILE, hint=hint)
    faiss_index.check_read(index, faiss, dimension, folder / mf.INDEX_FILE, hint)
    faiss_index.configure_search(index, FaissConfig(**_search_settings(manifest)))
    chunks = open_chunks(folder, manifest)
    if len(chunks) != manifest["chunks"]["count"]:
        # The manifest ties chunks.count to faiss.ntotal, and check_read the vectors to it.
        raise InputError(f"holds {len(chunks)} chunks, the manifest's chunks.count says "
                         f"{manifest['chunks']['count']}", path=chunks.path, hint=hint)
    return index, chunks


def _search_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    faiss = manifest["faiss"]
    settings = {"factory": faiss["factory"], "metric": faiss["metric"],
                "nprobe": faiss["nprobe"], "ef_search": faiss["ef_search"]}
    if isinstance(faiss.get("k_factor"), int):  # recorded since format 2
        settings["k_factor"] = faiss["k_factor"]
    return settings


def open_chunks(folder: Path, manifest: dict[str, Any]) -> ChunkReader:
    """The chunk store of a built index, in the layout its manifest's format names (the
    manifest's checks made sure the files it reads are listed)."""
    hint = mf.damaged_hint(manifest, folder)
    if manifest["format"] == 1:
        path = folder / mf.LEGACY_CHUNKS_FILE
        try:
            return JsonlChunks(path, hint=hint)
        except OSError as err:
            raise InputError(f"unreadable chunk store: {err.strerror or err}", path=path,
                             hint=hint) from None
    return ArrowChunks(folder / mf.CHUNKS_FILE, folder / mf.CHUNK_LANGS_FILE,
                       manifest["chunks"]["language_codes"], counts=manifest["languages"],
                       hint=hint)


def question_query(question: Any, with_options: bool = True) -> str:
    """The text searched for a :class:`~calm_rag.records.Question`: its stem, then its
    options (they name what the passage should be about)."""
    if not with_options:
        return question.stem
    return "\n".join([question.stem, *question.options.values()])
