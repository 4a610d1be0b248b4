"""A llama-index ``BaseRetriever`` over a calm_rag index, for llama-index query engines.

    from llama_index.core.query_engine import RetrieverQueryEngine
    engine = RetrieverQueryEngine.from_args(Retriever.open("medical-demo").as_llama_retriever(k=3))

A ``QueryBundle``'s first ``custom_embedding_strs`` entry, when given, is taken as the pivot
(English) query for the ``pivot`` and ``fused`` policies.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from calm_rag.retrieval.policies import QUERY_POLICIES

if TYPE_CHECKING:
    from calm_rag.retrieval.retriever import Hit, Retriever


class LlamaIndexRetriever(BaseRetriever):
    """Returns :class:`NodeWithScore` whose node id is the chunk id and whose metadata says
    the document, language, title and source."""

    def __init__(self, retriever: Retriever, k: int = 5, policy: str = "native",
                 lang: str | None = None, hybrid: bool = False, **kwargs: Any) -> None:
        QUERY_POLICIES.get(policy, field="policy")
        self._search = partial(retriever.retrieve, k=k, policy=policy, lang=lang, hybrid=hybrid)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        pivots = query_bundle.custom_embedding_strs or [None]
        hits = self._search(query_bundle.query_str, pivot_query=pivots[0])
        return [to_node(hit) for hit in hits]


def to_node(hit: Hit) -> NodeWithScore:
    chunk = hit.chunk
    node = TextNode(id_=chunk.id, text=chunk.text,
                    metadata={"doc_id": chunk.doc_id, "lang": chunk.lang, "title": chunk.title,
                              "source": chunk.source, "row": chunk.row, "rank": hit.rank})
    return NodeWithScore(node=node, score=hit.score)
