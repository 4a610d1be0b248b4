"""Embedding shards on disk: a killed build resumes after its last finished shard.

A shard is the embeddings of a run of consecutive chunks, saved as one ``.npy`` file named by a
hash of the embedder (weights, prompt, normalization) and of the exact texts it embeds. A shard
is therefore reused only for the very same input: any change in the corpus, the chunking or the
model gives new names, and a stale shard is never read.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calm_rag.io import atomic_write
from calm_rag.runtime.provenance import texts_digest

log = logging.getLogger(__name__)


class EmbeddingShards:
    """A folder of shard files for one index build."""

    def __init__(self, folder: Path, embedder_key: str, dimension: int) -> None:
        self.folder = Path(folder)
        self.embedder_key = embedder_key
        self.dimension = dimension

    def key(self, texts: Sequence[str]) -> str:
        return texts_digest(self.embedder_key, texts)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def load(self, key: str, rows: int) -> np.ndarray | None:
        """The shard's embeddings, or None when it is missing or not what it should be."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            vectors = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable shard %s: %s", path, err)
            return None
        if vectors.shape != (rows, self.dimension) or vectors.dtype != np.float32:
            log.warning("ignoring shard %s of shape %s", path, vectors.shape)
            return None
        return vectors

    def save(self, key: str, vectors: np.ndarray) -> None:
        with atomic_write(self.path(key), "wb") as handle:
            np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
