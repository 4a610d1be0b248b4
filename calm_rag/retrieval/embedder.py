"""The sentence-transformers embedder: prompts, batching, and a fingerprint of its weights.

E5-style models want ``passage: `` before a document and ``query: `` before a query; a model
that defines such prompts (``config_sentence_transformers.json``) gets them, one that does not
gets the bare text. The fingerprint (a hash of the weights) tells whether an index was built by
the very model that now embeds the queries.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.errors import InputError

log = logging.getLogger(__name__)

DOCUMENT_PROMPTS = ("document", "passage", "corpus")
QUERY_PROMPTS = ("query",)


@dataclass
class Embedder:
    """A loaded sentence-transformers model with the prompts and settings an index uses."""

    name: str
    """The name asked for (``multilingual-e5-small``, a hub id or a folder)."""
    location: str
    """What it was loaded from after :func:`calm_rag.models.resolve_embedder`."""
    model: Any = field(repr=False)
    normalize: bool = True
    batch_size: int = 32
    _gpus: tuple[Any, Any] | None = field(default=None, repr=False)
    """Inside :meth:`on_gpus`: the float16 copy on the GPUs and its process pool (or None)."""

    @classmethod
    def load(cls, name: str, *, normalize: bool = True, batch_size: int = 32) -> Embedder:
        """Load (once per process) the model a spec or manifest names."""
        location = _resolve(name)
        return cls(name=name, location=location, model=_load_model(location),
                   normalize=normalize, batch_size=batch_size)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def document_prompt(self) -> str:
        return _first_prompt(self.model.prompts, DOCUMENT_PROMPTS)

    @property
    def query_prompt(self) -> str:
        return _first_prompt(self.model.prompts, QUERY_PROMPTS)

    @property
    def fingerprint(self) -> str:
        """A hash of the weights and the sequence length (computed once per model)."""
        return _fingerprint(self.model)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        """Token ids without special tokens, for the chunker's length counts."""
        return self.model.tokenizer.encode(text, add_special_tokens=False, verbose=False)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of chunk texts, ``float32 [n, dimension]``, with the document prompt."""
        if self._gpus is not None:
            model, pool = self._gpus
            return self._encode(functools.partial(model.encode_document, pool=pool), texts,
                                self.document_prompt)
        return self._encode(self.model.encode_document, texts, self.document_prompt)

    @contextlib.contextmanager
    def on_gpus(self) -> Iterator[int]:
        """Inside the block documents are embedded on every visible CUDA device in float16 (a
        sentence-transformers process pool when there are several); yields how many (0: none
        visible, the CPU embeds as before)."""
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            log.debug("no CUDA device visible: embedding on the CPU")
            yield 0
            return
        from sentence_transformers import SentenceTransformer

        # A copy of its own: the cached model embeds queries and gives the fingerprint.
        model = SentenceTransformer(self.location, device="cuda:0").half()
        pool = (model.start_multi_process_pool([f"cuda:{i}" for i in range(count)])
                if count > 1 else None)
        log.info("embedding on %d GPU(s) in float16", count)
        self._gpus = (model, pool)
        try:
            yield count
        finally:
            self._gpus = None
            if pool is not None:
                model.stop_multi_process_pool(pool)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of queries, ``float32 [n, dimension]``, with the query prompt."""
        return self._encode(self.model.encode_query, texts, self.query_prompt)

    def _encode(self, encode: Any, texts: Sequence[str], prompt: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # The prompt is passed explicitly (even "") so a model's default prompt never sneaks in.
        vectors = encode(list(texts), prompt=prompt, batch_size=self.batch_size,
                         normalize_embeddings=self.normalize, convert_to_numpy=True,
                         show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def identity(self) -> dict[str, Any]:
        """What the manifest records about the embedder."""
        return {
            "name": self.name,
            "location": self.location,
            "fingerprint": self.fingerprint,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "document_prompt": self.document_prompt,
            "query_prompt": self.query_prompt,
            "normalize": self.normalize,
        }


def _resolve(name: str) -> str:
    from calm_rag.models import DEFAULT_EMBEDDERS, check_model_reference, resolve_embedder

    check_model_reference(name, field="embedder.model", defaults=DEFAULT_EMBEDDERS)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return resolve_embedder(name)


@functools.lru_cache(maxsize=4)
def _load_model(location: str) -> Any:
    from sentence_transformers import SentenceTransformer

    from calm_rag.models.references import from_local_or_hub

    log.info("loading embedder %s", location)
    try:
        return from_local_or_hub(location, SentenceTransformer)
    except InputError as err:
        raise err.at(field="embedder.model") from None


@functools.lru_cache(maxsize=4)
def _fingerprint(model: Any) -> str:
    import torch

    from calm_rag.runtime.provenance import buffers_digest

    # As raw bytes, so any dtype (bfloat16 too) hashes without a conversion, and the buffer
    # itself: no copy of the weights.
    return buffers_digest(f"max_seq_length={model.max_seq_length}", (
        (name, tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        for name, tensor in sorted(model.state_dict().items())))


def _first_prompt(prompts: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        if prompts.get(name):
            return prompts[name]
    return ""
