"""Reranking: a cross-encoder reads each question with each of its retrieved passages and
orders them by its score.

    reranker = Reranker.load("BAAI/bge-reranker-v2-m3")          # a local folder or hub cache
    hits = reranker.rerank_many(["阿片类药物过量用什么解毒？"], [hits], top_n=20, k=3)

A bi-encoder (the index's embedder) compares a question and a passage through one vector each;
a cross-encoder reads both together, which is what ranks a Chinese question against English
and Japanese passages well. It is slow (one forward pass per pair), so only the first
``top_n`` hits of the retrieval are reread, and the best ``k`` of them are kept.

The model is never downloaded here: it loads from a folder or from the local hub cache, and a
missing one is a one-line error saying how to fetch it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from calm_rag.config import at_least
from calm_rag.errors import InputError

log = logging.getLogger(__name__)

FIELD = "retrieval.rerank.model"


@dataclass(frozen=True)
class RerankConfig:
    """A cross-encoder that reorders the retrieved passages (off while ``model`` is empty)."""

    model: str = ""
    """A sentence-transformers CrossEncoder: a local folder or a hub id already in the local
    hub cache (e.g. ``BAAI/bge-reranker-v2-m3``); empty: no reranking."""
    top_n: int = 20
    """How many of the retrieval's best hits the cross-encoder rereads (at least ``k``)."""
    batch_size: int = 32
    """(question, passage) pairs per forward pass."""
    trust_remote_code: bool = False
    """Run the model folder's own code (``jina-reranker-v2-base-multilingual`` needs it)."""

    def __post_init__(self) -> None:
        at_least(self, 1, "top_n", "batch_size")
        if self.model:
            from calm_rag.models.references import check_reference

            check_reference(self.model, field="model")

    @property
    def enabled(self) -> bool:
        return bool(self.model)


@dataclass
class Reranker:
    """A loaded cross-encoder, on the GPU when torch sees one."""

    name: str
    model: Any = field(repr=False)
    batch_size: int = 32

    @classmethod
    def load(cls, name: str, *, batch_size: int = 32,
             trust_remote_code: bool = False) -> Reranker:
        """Load ``name`` from a folder or the local hub cache; an InputError if it is neither
        there nor a one-score cross-encoder."""
        import torch
        from sentence_transformers import CrossEncoder

        from calm_rag.models.references import check_reference, from_local_or_hub

        check_reference(name, field=FIELD)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            # local_files_only: a run never downloads; a folder or the hub cache, or an error.
            model = from_local_or_hub(name, CrossEncoder, local_files_only=True, device=device,
                                      trust_remote_code=trust_remote_code)
        except InputError as err:
            raise InputError(err.message, field=FIELD, hint=(
                "download it first (`huggingface-cli download <id>`) or give a local folder "
                "holding a sentence-transformers CrossEncoder")) from None
        _check_cross_encoder(name, model)
        log.info("reranker %s on %s", name, device)
        return cls(name=name, model=model, batch_size=batch_size)

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The model's relevance score of each ``(question, passage)`` pair."""
        if not pairs:
            return []
        values = self.model.predict([list(pair) for pair in pairs], batch_size=self.batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
        return [float(v) for v in values]

    def rerank_many(self, queries: Sequence[str], hits: Sequence[Sequence[dict[str, Any]]], *,
                    top_n: int, k: int) -> list[list[dict[str, Any]]]:
        """Each query's first ``top_n`` hits (dicts with ``text`` and ``rank``) ordered by the
        cross-encoder, best ``k`` kept; all pairs are scored in one batched call.

        Every kept hit gets ``rerank_score``, ``retrieval_rank`` (its rank before) and its new
        ``rank``; equal scores keep the retrieval's order.
        """
        if len(queries) != len(hits):
            raise ValueError(f"{len(queries)} queries but {len(hits)} hit lists")
        heads = [list(found[:top_n]) for found in hits]
        flat = self.scores([(query, hit["text"]) for query, found in zip(queries, heads,
                                                                         strict=True)
                            for hit in found])
        results, start = [], 0
        for found in heads:
            scored = list(zip(found, flat[start:start + len(found)], strict=True))
            start += len(found)
            order = sorted(range(len(scored)), key=lambda i: -scored[i][1])  # stable on ties
            results.append([{**scored[i][0], "rerank_score": scored[i][1],
                             "retrieval_rank": scored[i][0]["rank"], "rank": new}
                            for new, i in enumerate(order[:k], start=1)])
        return results


def _check_cross_encoder(name: str, model: Any) -> None:
    """Refuse a folder that is not a one-score cross-encoder: a plain encoder would load with
    a randomly initialised head, and its scores would look like any other."""
    config = model.model.config
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise InputError(f"{name} is not a cross-encoder (architectures: "
                         f"{', '.join(architectures) or 'none'})", field=FIELD,
                         hint="give a model with a sequence-classification head, such as "
                              "BAAI/bge-reranker-v2-m3")
    if model.num_labels != 1:
        raise InputError(f"{name} gives {model.num_labels} scores per pair, a reranker one",
                         field=FIELD)
