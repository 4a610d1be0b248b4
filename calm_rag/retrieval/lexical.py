"""BM25 over the chunks (``bm25s``), saved with the index and scored sparsely.

Tokens: scripts written without spaces are cut into overlapping character pairs (the usual
choice for CJK keyword search); other scripts into lower-cased words. Stop words are those of
the text's own language (a chunk's ``lang``, a query's detected language): English "die" is a
German stop word and must stay in an English query.

The index is bm25s's own files (``bm25.*`` in the index folder), memory-mapped when opened; a
query reads only the posting lists of its terms (bm25s keeps a word's scores as one column of
a CSC matrix), so its cost grows with those lists, not with the number of chunks.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.languages import STOPWORD_LISTS

log = logging.getLogger(__name__)

VERSION = 2
"""The tokenizer's version: 1 dropped the stop words of every language, 2 those of the text's."""

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"^[{_CJK}]+$")

FILES = {"data_name": "bm25.data.npy", "indices_name": "bm25.indices.npy",
         "indptr_name": "bm25.indptr.npy", "vocab_name": "bm25.vocab.json",
         "params_name": "bm25.params.json"}


def tokenize(text: str, lang: str | None = None) -> list[str]:
    """Lower-cased words, and character bigrams for CJK runs, without the stop words of
    ``lang`` (detected from the text when None)."""
    tokens: list[str] = []
    for run in _TOKEN.findall(text.lower()):
        if _CJK_RUN.match(run):
            tokens += [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        else:
            tokens.append(run)
    if lang is None:
        from calm_rag.retrieval.language_id import detect_language

        lang = detect_language(text)
    stop = stopwords(lang)
    return [t for t in tokens if t not in stop]


def _bm25s() -> Any:
    """bm25s, imported on first use; it sets its own logger to DEBUG when imported, which
    would print a line per search wherever logging is configured: back to warnings."""
    import bm25s
    import bm25s.stopwords  # noqa: F401  (a submodule: imported for the attribute)

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@functools.cache
def stopwords(lang: str) -> frozenset[str]:
    """The stop words of one language (none for a language bm25s has no list for)."""
    from calm_rag.retrieval.language_id import language_code

    name = STOPWORD_LISTS.get(language_code(lang))
    return frozenset(getattr(_bm25s().stopwords, name)) if name else frozenset()


class LexicalIndex:
    """A BM25 index over chunk texts (rows as in the FAISS index)."""

    def __init__(self, bm25: Any) -> None:
        self._bm25 = bm25
        self.size = int(bm25.scores["num_docs"])

    @classmethod
    def build(cls, documents: Iterable[tuple[str, str]]) -> LexicalIndex:
        """Index ``(text, lang)`` pairs, in row order."""
        bm25 = _bm25s().BM25()
        bm25.index([tokenize(text, lang) for text, lang in documents], show_progress=False)
        return cls(bm25)

    def save(self, folder: Path) -> list[str]:
        """Write bm25s's files into ``folder``; return their names."""
        self._bm25.save(str(folder), show_progress=False, **FILES)
        return sorted(FILES.values())

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """The saved index, its score arrays memory-mapped."""
        bm25 = _bm25s().BM25.load(str(folder), mmap=True, show_progress=False, **FILES)
        return cls(bm25)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None,
               lang: str | None = None) -> list[tuple[int, float]]:
        """Top-``k`` ``(row, score)``, best first; rows where the boolean ``allowed`` is False
        are skipped, and so are rows that share no term with the query."""
        ids = self._bm25.get_tokens_ids(tokenize(query, lang))
        if not ids:
            return []
        rows, scores = self._scores(ids)
        if allowed is not None:
            keep = allowed[rows]
            rows, scores = rows[keep], scores[keep]
        keep = scores > 0
        rows, scores = rows[keep], scores[keep]
        if len(rows) == 0:
            return []
        k = min(k, len(rows))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((rows[top], -scores[top]))]  # ties: the lower row first
        return [(int(rows[i]), float(scores[i])) for i in top]

    def _scores(self, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The rows that hold any of the terms, and their BM25 scores (a sum over the query's
        terms, a repeated term counted again as bm25s does)."""
        matrix = self._bm25.scores
        indptr = matrix["indptr"]
        spans = [(int(indptr[t]), int(indptr[t + 1])) for t in token_ids]
        docs = np.concatenate([matrix["indices"][a:b] for a, b in spans])
        values = np.concatenate([matrix["data"][a:b] for a, b in spans])
        rows, inverse = np.unique(docs, return_inverse=True)
        totals = np.bincount(inverse, weights=values, minlength=len(rows))
        return rows.astype(np.int64), totals.astype(np.float32)
