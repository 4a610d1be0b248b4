"""BM25 over the chunks (``bm25s``), with a tokenizer that also works for Chinese and Japanese.

Scripts written without spaces are cut into overlapping character pairs (the usual choice for
CJK keyword search); other scripts into lower-cased words.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"^[{_CJK}]+$")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, and character bigrams for CJK runs; stopwords left out."""
    tokens: list[str] = []
    for run in _TOKEN.findall(text.lower()):
        if _CJK_RUN.match(run):
            tokens += [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        else:
            tokens.append(run)
    stop = _stopwords()
    return [t for t in tokens if t not in stop]


def _bm25s() -> Any:
    """bm25s, imported on first use; it sets its own logger to DEBUG when imported, which
    would print a line per search wherever logging is configured: back to warnings."""
    import bm25s
    import bm25s.stopwords  # noqa: F401  (a submodule: imported for the attribute)

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@functools.cache
def _stopwords() -> frozenset[str]:
    """The stopwords of every language bm25s lists: in a multilingual corpus the few
    documents in one language would otherwise rank high on that language's "the" and "of"."""
    stopwords = _bm25s().stopwords
    lists = [getattr(stopwords, name) for name in dir(stopwords) if name.startswith("STOPWORDS_")]
    return frozenset(word for words in lists for word in words)


class LexicalIndex:
    """A BM25 index over chunk texts (rows as in the FAISS index)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        self._bm25 = _bm25s().BM25()
        self._bm25.index([tokenize(t) for t in texts], show_progress=False)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None
               ) -> list[tuple[int, float]]:
        """Top-``k`` ``(row, score)``, best first; rows where ``allowed`` is False are skipped,
        and so are rows that share no term with the query."""
        ids = self._bm25.get_tokens_ids(tokenize(query))
        if not ids:
            return []
        scores = self._bm25.get_scores_from_ids(ids)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        k = min(k, self.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(row), float(scores[row])) for row in top if scores[row] > 0]
