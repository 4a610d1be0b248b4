"""Retrieval: corpora → chunks → embeddings → FAISS index (+ manifest) → retriever.

    from calm_rag.retrieval import build_index, load_spec, Retriever
    build_index(load_spec("indexes/medical-demo.yaml"))
    hits = Retriever.open("medical-demo").retrieve("What causes ...?", k=5)

Names are imported on first use, so ``import calm_rag.retrieval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IndexSpec": "spec",
    "load_spec": "spec",
    "spec_from_dict": "spec",
    "Document": "corpora",
    "read_corpus": "corpora",
    "detect_language": "language_id",
    "Chunk": "chunking",
    "Embedder": "embedder",
    "build_index": "build",
    "BuildResult": "build",
    "Retriever": "retriever",
    "Hit": "retriever",
    "question_query": "retriever",
    "QUERY_POLICIES": "policies",
    "reciprocal_rank_fusion": "fusion",
    "list_indexes": "catalog",
    "locate_index": "catalog",
}

__all__ = (
    "QUERY_POLICIES",
    "BuildResult",
    "Chunk",
    "Document",
    "Embedder",
    "Hit",
    "IndexSpec",
    "Retriever",
    "build_index",
    "detect_language",
    "list_indexes",
    "load_spec",
    "locate_index",
    "question_query",
    "read_corpus",
    "reciprocal_rank_fusion",
    "spec_from_dict",
)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
