"""Index specs: the YAML files in ``indexes/`` that say what an index is built from.

Example (``indexes/medical-demo.yaml``)::

    name: medical-demo
    corpus:
      - {type: jsonl, path: "package:calm_rag/retrieval/data/medical_corpus.jsonl"}
    chunking: {chunk_size: 256, chunk_overlap: 32}
    embedder: {model: multilingual-e5-small, batch_size: 32, normalize: true}
    faiss: {factory: Flat, metric: ip}

The dataclasses below are the manual: each key's documentation is the text under its field.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calm_rag.config import INTERNAL, at_least, from_mapping, read_yaml
from calm_rag.errors import InputError
from calm_rag.registries import CORPUS_READERS

PACKAGE_PREFIX = "package:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class CorpusSource:
    """One corpus to index."""

    type: str
    """A registered corpus type: ``jsonl``: one ``{"id", "text", "title"?, "lang"?}`` object a
    line (MedRAG's ``content`` is read as ``text``); ``parquet``: a parquet file or a folder of
    them with the same columns (read in batches); ``text``: a folder of ``.txt`` files
    (searched recursively), one document each; ``medqa-textbooks``: MedQA's ``textbooks``
    folder (``en/*.txt`` and ``zh_paragraph/*.txt``); ``hub``: a hub dataset streamed
    (``name``, ``config``, ``split``, ``revision``; columns ``id_field``, ``text_field``,
    ``title_field``), or a local copy of it in the hub's layout given as ``path``."""
    path: str | None = None
    """File or folder (for ``hub``: a local copy, read instead of the hub). Relative paths
    start at the spec's folder; ``package:calm_rag/...`` names data inside an installed
    package; ``${VAR}`` and ``${VAR:-default}`` are expanded."""
    lang: str | None = None
    """The language of every document (ISO 639-1); when absent, a document's own ``lang`` or
    the detected language is used."""
    name: str | None = None
    """``hub``: the dataset's hub id (``MedRAG/textbooks``)."""
    config: str | None = None
    """``hub``: the dataset's configuration (subset), if it has several."""
    split: str = "train"
    """``hub``: the split read."""
    revision: str | None = None
    """``hub``: a commit (40 hex digits: the index key needs no network), a branch or a tag
    (resolved to its commit when the index is built; a moved branch rebuilds it)."""
    id_field: str = "id"
    """``hub``: the column holding a passage's unique id."""
    text_field: str | None = None
    """``hub``: the column holding the passage (default ``text``, else MedRAG's ``content``)."""
    title_field: str | None = None
    """``hub``: the column holding the title (default ``title`` where the rows have one)."""
    limit: int | None = None
    """``hub``: read only the first so many rows (a subset of a very large corpus)."""

    def __post_init__(self) -> None:
        CORPUS_READERS.check(self.type, "type")
        at_least(self, 1, "limit")
        if self.type == "hub":
            if not self.name and not self.path:
                raise InputError("a hub source needs name (a hub id) or path (a local copy)",
                                 field="name")
            if self.name:
                _check_hub_id(self.name)
            return
        if not self.path:
            raise InputError("missing", field="path", hint=f"the {self.type} corpus's file "
                             "or folder")
        hub_only = {"name": self.name, "config": self.config, "revision": self.revision,
                    "text_field": self.text_field, "title_field": self.title_field,
                    "limit": self.limit, "split": None if self.split == "train" else self.split,
                    "id_field": None if self.id_field == "id" else self.id_field}
        for key, value in hub_only.items():
            if value is not None:
                raise InputError(f"only for type: hub, not {self.type}", field=key)

    @property
    def where(self) -> str:
        """The path, or the hub id, as written (manifests and messages)."""
        return self.path or f"hub:{self.name}"


def _check_hub_id(name: str) -> None:
    """A name the hub cannot hold fails at load, named as ``name`` (not later, when its
    revision is resolved over the network)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        text = " ".join(str(err).split())
        raise InputError(f"is not a hub id: {text}", field="name",
                         hint="a dataset's id as the hub shows it (owner/name), or path: a "
                              "local copy") from None


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents are cut into passages (llama-index ``SentenceSplitter``)."""

    chunk_size: int = 256
    """Most tokens in a chunk, counted with the embedder's own tokenizer, so that a chunk is
    not truncated when embedded (keep it at most the model's ``max_seq_length``)."""
    chunk_overlap: int = 32
    """Tokens shared by consecutive chunks of a document."""
    include_title: bool = True
    """Embed ``title`` + newline + chunk text (the stored chunk text stays without it)."""
    split: bool = True
    """``false``: each document is one passage, kept as it is (a corpus already cut into
    snippets, such as MedRAG's); ``chunk_size`` then only warns about passages the embedder
    will cut off."""

    def __post_init__(self) -> None:
        at_least(self, 1, "chunk_size")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise InputError(f"must be at least 0 and less than chunk_size ({self.chunk_size})",
                             field="chunk_overlap")


@dataclass(frozen=True)
class EmbedderConfig:
    """The sentence-transformers model that embeds chunks and queries."""

    model: str = "multilingual-e5-small"
    """A default name (``multilingual-e5-small``, ``all-MiniLM-L6-v2``: prepared offline by
    ``calm_rag.models``), a hub id, or a local sentence-transformers folder."""
    batch_size: int = 32
    """Chunks embedded at once."""
    normalize: bool = True
    """Scale embeddings to unit length (with ``metric: ip`` the score is the cosine)."""
    shard_size: int = 2048
    """Chunks per embedding shard written to disk: memory stays bounded by one shard, and a
    killed build resumes after its last finished shard."""

    def __post_init__(self) -> None:
        at_least(self, 1, "batch_size", "shard_size")


@dataclass(frozen=True)
class FaissConfig:
    """The FAISS index that stores the embeddings."""

    factory: str = "Flat"
    """A ``faiss.index_factory`` string: ``Flat`` (exact), ``HNSW32`` (graph, no training),
    ``IVF1024,Flat``, ``IVF4096,PQ64`` or ``OPQ64,IVF65536_HNSW32,PQ64`` (trained on
    ``train_size`` embeddings, then filled shard by shard; needs at least as many chunks as
    lists)."""
    metric: Literal["ip", "l2"] = "ip"
    """``ip``: inner product (cosine when normalized); ``l2``: Euclidean distance."""
    train_size: int | None = None
    """Most embeddings used to train a trained index (an evenly spread, fixed sample). Left
    out: 100,000, or more where the factory needs it (FAISS asks for 39 vectors per centroid
    of its largest k-means: ``IVF4096`` needs 159,744); a smaller value is logged as a
    warning, and fewer vectors than centroids is an error."""
    nprobe: int = 16
    """IVF indexes: inverted lists visited per query (more: better recall, slower)."""
    ef_search: int = 128
    """HNSW indexes: breadth of the graph search per query (more: better recall, slower)."""
    k_factor: int = 4
    """Indexes with a refinement stage (``IVF4096,PQ64,Refine(SQ8)``): the compressed search
    finds ``k_factor`` times the hits asked for, and the finer codes re-rank them (PQ alone
    loses recall among close neighbours; a re-rank wins it back)."""
    ef_construction: int = 40
    """HNSW indexes: breadth of the graph search when a vector is inserted (more: a better
    graph and recall, a slower build; 40 is FAISS's default)."""
    on_disk: bool = False
    """IVF indexes: keep the inverted lists (the compressed vectors) in ``index.ivfdata``
    beside the index, memory-mapped when it is opened (FAISS's ``OnDiskInvertedLists``), so
    an index larger than RAM is served from disk and the page cache."""
    gpu: bool = False
    """Train, fill and search the index on every visible GPU (``index_cpu_to_all_gpus``;
    needs faiss-gpu), and embed on every visible GPU in float16 (a sentence-transformers
    multi-process pool). On a machine without one the same spec builds on the CPU, with one
    log line saying so."""

    def __post_init__(self) -> None:
        at_least(self, 1, "train_size", "nprobe", "ef_search", "ef_construction", "k_factor")


@dataclass(frozen=True)
class IndexSpec:
    """A retrieval index: its corpus, chunking, embedder and FAISS layout."""

    name: str
    """The index's name; it is built into ``<out-dir>/<name>/``."""
    corpus: tuple[CorpusSource, ...]
    """The corpora to index, in order."""
    description: str = ""
    """Free text shown by ``calm-rag index list``."""
    chunking: ChunkingConfig = ChunkingConfig()
    """How documents are cut into passages (``chunking: none``: not at all, each document one
    passage, as ``split: false``)."""
    embedder: EmbedderConfig = EmbedderConfig()
    """The sentence-transformers model that embeds chunks and queries."""
    faiss: FaissConfig = FaissConfig()
    """The FAISS index that stores the embeddings."""
    bm25: bool = True
    """Build a BM25 index of the chunks with the index (for ``hybrid`` retrieval); ``false``
    saves its build time and disk, and a hybrid search then builds it in memory."""
    spec_path: str = field(default="", metadata=INTERNAL, compare=False)
    """Where the spec was read from (set by :func:`load_spec`); relative paths start there."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InputError(f"{self.name!r} is not a usable folder name", field="name",
                             hint="use letters, digits, '.', '_' and '-'")
        if not self.corpus:
            raise InputError("lists no corpus", field="corpus")
        seen: dict[tuple[Any, ...], int] = {}
        for i, source in enumerate(self.corpus):  # one source twice would index it twice
            first = seen.setdefault((source.type, source.where, source.config, source.split), i)
            if first != i:
                raise InputError(f"the same source as corpus[{first}]", field=f"corpus[{i}]",
                                 hint="list each corpus once")

    def to_dict(self) -> dict[str, Any]:
        """The spec as YAML would say it (for the manifest)."""
        data = dataclasses.asdict(self)
        data.pop("spec_path")
        return data

    @property
    def base_dir(self) -> Path:
        return Path(self.spec_path).parent if self.spec_path else Path.cwd()


def load_spec(path: str | Path) -> IndexSpec:
    """Read and check an index spec YAML file."""
    path = Path(path)
    data, lines = read_yaml(path)
    spec = from_mapping(IndexSpec, _shorthands(data), path=path, lines=lines)
    return dataclasses.replace(spec, spec_path=str(path.resolve()))


def spec_from_dict(data: dict[str, Any], base_dir: str | Path | None = None) -> IndexSpec:
    """Build a spec in code (a notebook, a test); relative paths start at ``base_dir``."""
    spec = from_mapping(IndexSpec, _shorthands(data))
    if base_dir is None:
        return spec
    return dataclasses.replace(spec, spec_path=str(Path(base_dir).resolve() / "spec.yaml"))


def expand_env(raw: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` replaced (an unset ``${VAR}`` stays as written, so
    the error shows it; ``${VAR:-}`` is the empty string)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1))
                    or (m.group(2) if m.group(2) is not None else m.group(0)), raw)


def _shorthands(data: Any) -> Any:
    """``chunking: none``: a pre-chunked corpus (MedRAG's snippets) indexed as it is, the
    same as ``chunking: {split: false}``."""
    if isinstance(data, dict) and data.get("chunking") == "none":
        return {**data, "chunking": {"split": False}}
    return data


def resolve_path(raw: str, base_dir: Path) -> Path:
    """A corpus path as written in a spec, made absolute (see :attr:`CorpusSource.path`)."""
    text = expand_env(raw)
    if text.startswith(PACKAGE_PREFIX):
        package, _, inner = text[len(PACKAGE_PREFIX):].strip("/").partition("/")
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError:
            raise InputError(f"no installed package {package!r} for {raw!r}",
                             field="corpus.path") from None
        return Path(str(root.joinpath(inner)))
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else base_dir / path
