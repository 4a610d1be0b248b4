"""Cutting documents into chunks with llama-index's ``SentenceSplitter``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from calm_rag.retrieval.corpora import Document
from calm_rag.retrieval.spec import ChunkingConfig


@dataclass(frozen=True)
class Chunk:
    """One indexed passage; ``row`` is its id in the FAISS index."""

    row: int
    id: str
    """``<document id>#<n>``: unique within the index."""
    doc_id: str
    """The document it was cut from (what qrels name)."""
    lang: str
    title: str
    text: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Chunk:
        return cls(**obj)

    def embedding_text(self, include_title: bool) -> str:
        """What the embedder reads: the title gives a short chunk its topic."""
        return f"{self.title}\n{self.text}" if include_title and self.title else self.text


def make_splitter(config: ChunkingConfig, tokenize: Callable[[str], list]) -> Any:
    """A ``SentenceSplitter`` that counts tokens with the embedder's tokenizer."""
    if not config.split:
        return _Whole()
    from llama_index.core.node_parser import SentenceSplitter

    return SentenceSplitter(chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap,
                            tokenizer=tokenize)


class _Whole:
    """``chunking.split: false``: a pre-chunked corpus's passages stay as they are."""

    def split_text(self, text: str) -> list[str]:
        return [text]


def chunk_documents(documents: Iterable[Document], splitter: Any, first_row: int = 0
                    ) -> Iterator[Chunk]:
    """Chunks of each document in order, numbered from ``first_row``."""
    row = first_row
    for document in documents:
        for n, text in enumerate(splitter.split_text(document.text)):
            if not text.strip():
                continue
            yield Chunk(row=row, id=f"{document.id}#{n}", doc_id=document.id,
                        lang=document.lang, title=document.title, text=text,
                        source=document.source)
            row += 1
