"""Building an index: read → chunk → embed in shards → train and fill FAISS → manifest.

The folder is built beside the old one and swapped in at the end (a failed rebuild leaves the
previous index usable). Embeddings stream to shard files under ``<out-dir>/.cache/<name>/``, so
memory holds one shard at a time and a killed build skips the shards it already wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.errors import InputError
from calm_rag.io import atomic_dir
from calm_rag.retrieval import faiss_index, integrity
from calm_rag.retrieval import manifest as mf
from calm_rag.retrieval.chunk_store import ArrowChunks, ChunkWriter
from calm_rag.retrieval.chunking import Chunk, chunk_documents, make_splitter
from calm_rag.retrieval.corpora import hash_corpus, read_corpus
from calm_rag.retrieval.embedder import Embedder
from calm_rag.retrieval.filling import IVF_DATA_FILE, Plan, check_layout, fill_index, gpu_count
from calm_rag.retrieval.hub_corpus import HubCorpus, hub_source
from calm_rag.retrieval.lexical import VERSION as LEXICAL_VERSION
from calm_rag.retrieval.shards import EmbeddingShards
from calm_rag.retrieval.spec import IndexSpec, resolve_path
from calm_rag.runtime.provenance import file_entry, json_digest, package_versions

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"


@dataclass
class BuildResult:
    """What a build did."""

    path: Path
    built: bool
    """False when the index was already up to date and nothing was done."""
    chunks: int = 0
    embedded_shards: int = 0
    reused_shards: int = 0
    seconds: float = 0.0


@dataclass
class _Source:
    type: str
    path: str
    resolved: Path | HubCorpus
    lang: str | None
    sha256: str
    documents: int = 0
    chunks: int = 0


@dataclass
class _ChunkStats:
    documents: int = 0
    chunks: int = 0
    languages: Counter = field(default_factory=Counter)
    codes: list[str] = field(default_factory=list)
    """The chunk store's language codes, in the order of their integer codes."""


def build_index(spec: IndexSpec, out_dir: str | Path = "indexes", *, force: bool = False,
                keep_embeddings: bool = False, progress: bool = True) -> BuildResult:
    """Build ``<out_dir>/<spec.name>/``; an up-to-date index is left alone unless ``force``."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    target = out_dir / spec.name
    if target.exists() and not (target / mf.MANIFEST).is_file():
        # --force replaces an index whole: never a folder of the user's that shares its name.
        raise InputError(f"{target} exists and is not an index built by calm-rag (no "
                         f"{mf.MANIFEST})", path=target,
                         hint="move it away or give the index another name")
    sources = _resolve_sources(spec, _built_corpora(target))
    if not force and _up_to_date(spec, sources, target):  # before loading any model
        log.info("%s is up to date", target)
        return BuildResult(path=target, built=False)
    embedder = Embedder.load(spec.embedder.model, normalize=spec.embedder.normalize,
                             batch_size=spec.embedder.batch_size)
    index = faiss_index.make_index(spec.faiss, embedder.dimension)  # a bad factory fails now
    check_layout(index, spec.faiss)
    spec = _with_train_size(spec, index)
    key = build_key(spec, sources, embedder.fingerprint)
    if target.exists() and not force:
        if _existing_key(target) == key:
            log.info("%s is up to date", target)
            _restamp(target, embedder.location)
            return BuildResult(path=target, built=False)
        raise InputError("an index of this name exists, built from other inputs", path=target,
                         hint="pass --force to rebuild it (the old one stays until the new "
                              "one is complete)")
    _warn_truncation(spec, embedder)
    shards = EmbeddingShards(out_dir / CACHE_DIR / spec.name, _embedder_key(spec, embedder),
                             embedder.dimension)
    with _exclusive_build(out_dir, spec.name):
        with atomic_dir(target) as staging:
            stats = _write_chunks(spec, sources, embedder, staging, progress)
            faiss_index.check_trainable(index, spec.faiss, stats.chunks)
            chunks = ArrowChunks(staging / mf.CHUNKS_FILE, staging / mf.CHUNK_LANGS_FILE,
                                 stats.codes)
            with embedder.on_gpus() if spec.faiss.gpu else contextlib.nullcontext(0):
                plan, embedded = _embed_shards(spec, embedder, shards, chunks, stats.chunks,
                                               progress)
            index = fill_index(index, spec.faiss, shards, plan, staging, progress)
            faiss_index.write_index(index, staging / mf.INDEX_FILE)
            lexical = _write_bm25(chunks, staging) if spec.bm25 else []
            seconds = time.perf_counter() - started
            manifest = _manifest(spec, sources, embedder, index, stats, key, staging, seconds,
                                 lexical)
            mf.write_manifest(staging, manifest)
        if not keep_embeddings:  # under the lock: no other build is using the shards
            shards.remove()
        # The manifest's checksums were computed from these very files in the private
        # staging folder: an open need not hash them again (see integrity).
        integrity.record(target, manifest)
    log.info("built %s: %d chunks in %.1f s", target, stats.chunks, seconds)
    return BuildResult(path=target, built=True, chunks=stats.chunks, embedded_shards=embedded,
                       reused_shards=len(plan) - embedded, seconds=seconds)


@contextlib.contextmanager
def _exclusive_build(out_dir: Path, name: str) -> Iterator[None]:
    """One build of an index at a time; the holder removes what killed builds left behind
    (atomic_dir's ``.<name>.*.new`` staging folders)."""
    from filelock import FileLock, Timeout

    lock_path = out_dir / CACHE_DIR / f"{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        held = FileLock(lock_path).acquire(timeout=0)
    except Timeout:
        raise InputError("another build of this index is running", path=out_dir / name,
                         hint="wait for it to finish") from None
    with held:
        for leftover in out_dir.glob(f".{name}.*.new"):
            shutil.rmtree(leftover, ignore_errors=True)
        yield


# Keys added after indexes were built, and at these values, leave the build key as it was: an
# index built before them is still up to date, not "built from other inputs".
_KEY_DEFAULTS = {"chunking": {"split": True}, "bm25": True,
                 "faiss": {"ef_construction": 40, "on_disk": False, "gpu": False,
                           "k_factor": 4}}


def _with_train_size(spec: IndexSpec, index: Any) -> IndexSpec:
    """The spec with its training sample's size settled (the factory's need when it names
    none), so the build key and the manifest say what was trained on. An index needing no
    training settles on the old fixed default, which leaves its build key as it was."""
    faiss_index.check_train_size(index, spec.faiss)
    settled = faiss_index.train_size(spec.faiss, index)
    return dataclasses.replace(spec, faiss=dataclasses.replace(spec.faiss, train_size=settled))


def build_key(spec: IndexSpec, sources: list[_Source], fingerprint: str) -> str:
    """Everything that decides the index's content; equal keys mean nothing to rebuild."""
    described = {k: v for k, v in spec.to_dict().items() if k != "description"}
    for name, default in _KEY_DEFAULTS.items():
        if isinstance(default, dict):
            described[name] = {k: v for k, v in described[name].items()
                               if k not in default or v != default[k]}
        elif described[name] == default:
            del described[name]
    inputs = {"format": mf.KEY_FORMAT, "spec": described,
              "corpus": [s.sha256 for s in sources], "embedder": fingerprint}
    return json_digest(inputs, ascii_only=True)


def _up_to_date(spec: IndexSpec, sources: list[_Source], target: Path) -> bool:
    """Whether the index at ``target`` was built from these inputs, decided from its manifest
    alone (no torch, transformers or FAISS): the embedder's weights are the ones it
    fingerprinted while its files are unchanged, and the training size the one it settled.
    False sends the build on to the full check (old manifests have no files stamp)."""
    try:
        manifest = mf.read_manifest(target)
    except InputError:
        return False
    built = manifest["embedder"]
    location = _embedder_location(spec.embedder.model)
    if (built.get("location") != location or not built.get("files_stamp")
            or built["files_stamp"] != files_stamp(location)):
        return False
    settled = manifest["faiss"].get("train_size")
    if spec.faiss.train_size not in (None, settled):
        return False
    spec = dataclasses.replace(spec, faiss=dataclasses.replace(spec.faiss, train_size=settled))
    return build_key(spec, sources, built["fingerprint"]) == manifest["build_key"]


def _restamp(target: Path, location: str) -> None:
    """The embedder's files as they are now, in the manifest of an index the full check found
    up to date (one built before the stamp existed, or a model prepared again: same weights,
    new files): the next no-op build decides from the manifest, without loading the model."""
    manifest = mf.read_manifest(target)
    stamp = {"location": location, "files_stamp": files_stamp(location)}
    if {key: manifest["embedder"].get(key) for key in stamp} != stamp:
        manifest["embedder"] |= stamp
        mf.write_manifest(target, manifest)


def _embedder_location(name: str) -> str:
    """Where ``Embedder.load(name)`` would load from (a folder as given, else resolved)."""
    from calm_rag.models import DEFAULT_EMBEDDERS, check_model_reference, resolve_embedder

    check_model_reference(name, field="embedder.model", defaults=DEFAULT_EMBEDDERS)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return resolve_embedder(name)


def files_stamp(location: str) -> str | None:
    """A digest of the names, sizes and modification times of a model folder's files (None
    for no folder): equal stamps, the same weights, without reading them."""
    folder = Path(location)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return json_digest([(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in files])


def _resolve_sources(spec: IndexSpec, built: set[str]) -> list[_Source]:
    """The spec's sources, resolved and hashed; a hub source not yet indexed (its hash not in
    ``built``) reads its first row now, so a wrong column or an unreachable hub stops the build
    before any model is loaded, while an index already built from it opens offline."""
    sources = []
    for i, source in enumerate(spec.corpus):
        resolved: Path | HubCorpus
        if source.type == "hub":
            resolved = hub_source(source, spec.base_dir, i)
        else:
            assert source.path is not None  # CorpusSource requires it for files
            resolved = resolve_path(source.path, spec.base_dir)
        if not resolved.exists():
            raise InputError(f"no such file or folder: {resolved}", path=spec.spec_path or None,
                             field=f"corpus[{i}].path", hint="check the corpus path")
        sha256 = hash_corpus(source.type, resolved)
        if isinstance(resolved, HubCorpus) and sha256 not in built:
            resolved.check()
        sources.append(_Source(source.type, source.where, resolved, source.lang, sha256))
    return sources


def _built_corpora(target: Path) -> set[str]:
    """The corpus hashes the index at ``target`` was built from (none if there is none)."""
    try:
        return {c["sha256"] for c in mf.read_manifest(target)["corpus"]}
    except InputError:
        return set()


def _existing_key(target: Path) -> str | None:
    try:
        return mf.read_manifest(target).get("build_key")
    except InputError:
        return None


def _warn_truncation(spec: IndexSpec, embedder: Embedder) -> None:
    room = embedder.max_seq_length - embedder.count_tokens(embedder.document_prompt) - 2
    if spec.chunking.chunk_size > room:
        log.warning("chunk_size %d exceeds what %s reads (%d tokens after its prompt): chunk "
                    "ends will be cut off", spec.chunking.chunk_size, spec.embedder.model, room)


def _embedder_key(spec: IndexSpec, embedder: Embedder) -> str:
    # float16 embeddings from GPUs differ in the last bits: shards of their own.
    return (f"{embedder.fingerprint}|{embedder.document_prompt}|{embedder.normalize}"
            f"|title={spec.chunking.include_title}" + ("|gpu-fp16" if spec.faiss.gpu else ""))


def _write_chunks(spec: IndexSpec, sources: list[_Source], embedder: Embedder, folder: Path,
                  progress: bool) -> _ChunkStats:
    from calm_rag.runtime.progress import progress_bar

    splitter = make_splitter(spec.chunking, embedder.tokenize)
    stats = _ChunkStats()
    with ChunkWriter(folder / mf.CHUNKS_FILE, folder / mf.CHUNK_LANGS_FILE) as writer, \
            progress_bar("chunking", unit="doc", enabled=progress) as bar:
        for source in sources:
            documents = _counted(read_corpus(source.type, source.resolved, source.lang), source,
                                 bar)
            for chunk in chunk_documents(documents, splitter, first_row=stats.chunks):
                writer.add(chunk)
                stats.chunks += 1
                source.chunks += 1
                stats.languages[chunk.lang] += 1
            stats.documents += source.documents
    if stats.chunks == 0:
        raise InputError("the corpus gave no chunks", path=str(sources[0].resolved))
    stats.codes = writer.languages
    return stats


def _counted(documents: Iterator, source: _Source, bar: Any) -> Iterator:
    for document in documents:
        source.documents += 1
        bar.update(1)
        yield document


def _chunk_groups(chunks: ArrowChunks, size: int) -> Iterator[list[Chunk]]:
    """The chunks in row order, ``size`` at a time (the store's batches regrouped)."""
    group: list[Chunk] = []
    for batch in chunks.iter_batches():
        for chunk in batch:
            group.append(chunk)
            if len(group) == size:
                yield group
                group = []
    if group:
        yield group


def _write_bm25(chunks: ArrowChunks, folder: Path) -> list[str]:
    """BM25 of the chunks (title and text, as embedded), saved in bm25s's files."""
    from calm_rag.retrieval.lexical import LexicalIndex

    log.info("building the BM25 index (%d chunks)", len(chunks))
    lexical = LexicalIndex.build((c.embedding_text(True), c.lang)
                                 for batch in chunks.iter_batches() for c in batch)
    return lexical.save(folder)


def _embed_shards(spec: IndexSpec, embedder: Embedder, shards: EmbeddingShards,
                  chunks: ArrowChunks, total: int, progress: bool) -> tuple[Plan, int]:
    """Embed each shard not on disk yet; return the plan ``[(key, rows)]`` and how many
    shards were embedded (the rest were reused)."""
    from calm_rag.runtime.progress import progress_bar

    plan, embedded = [], 0
    with progress_bar("embedding", total, unit="chunk", enabled=progress) as bar:
        for group in _chunk_groups(chunks, spec.embedder.shard_size):
            texts = [c.embedding_text(spec.chunking.include_title) for c in group]
            key = shards.key(texts)
            if shards.load(key, len(texts)) is None:
                shards.save(key, _embed_sorted(embedder, texts, bar))
                embedded += 1
            else:
                bar.update(len(texts))
            plan.append((key, len(texts)))
            bar.set_postfix(reused=len(plan) - embedded)
    return plan, embedded


def _embed_sorted(embedder: Embedder, texts: list[str], bar: Any) -> np.ndarray:
    """Embed longest first, in slices that move the progress bar: texts of similar length
    share a batch, so little is spent on padding."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: np.ndarray = np.empty((len(texts), embedder.dimension), dtype=np.float32)
    step = embedder.batch_size * 4
    for start in range(0, len(order), step):
        rows = order[start:start + step]
        out[rows] = embedder.embed_documents([texts[i] for i in rows])
        bar.update(len(rows))
    return out


def _manifest(spec: IndexSpec, sources: list[_Source], embedder: Embedder, index: Any,
              stats: _ChunkStats, key: str, staging: Path, seconds: float, lexical: list[str]
              ) -> dict[str, Any]:
    files = [mf.INDEX_FILE, mf.CHUNKS_FILE, mf.CHUNK_LANGS_FILE, *lexical]
    if (staging / IVF_DATA_FILE).is_file():
        files.append(IVF_DATA_FILE)
    return {
        "format": mf.FORMAT,
        "name": spec.name,
        "description": spec.description,
        "spec_path": spec.spec_path,
        "spec": spec.to_dict(),
        "build_key": key,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
        "embedder": {**embedder.identity(), "batch_size": embedder.batch_size,
                     "files_stamp": files_stamp(embedder.location)},
        "faiss": {"factory": spec.faiss.factory, "metric": spec.faiss.metric,
                  "dimension": index.d, "ntotal": index.ntotal, "nprobe": spec.faiss.nprobe,
                  "ef_search": spec.faiss.ef_search, "ef_construction": spec.faiss.ef_construction,
                  "k_factor": spec.faiss.k_factor,
                  "train_size": spec.faiss.train_size, "on_disk": spec.faiss.on_disk,
                  "gpu": spec.faiss.gpu, "built_on_gpus": gpu_count() if spec.faiss.gpu else 0,
                  "code_bytes": faiss_index.code_bytes(index)},
        "chunks": {"count": stats.chunks, "chunk_size": spec.chunking.chunk_size,
                   "chunk_overlap": spec.chunking.chunk_overlap,
                   "include_title": spec.chunking.include_title, "tokenizer": "embedder",
                   "file": mf.CHUNKS_FILE, "languages_file": mf.CHUNK_LANGS_FILE,
                   "language_codes": stats.codes},
        "lexical": ({"kind": "bm25s", "tokenizer_version": LEXICAL_VERSION, "files": lexical}
                    if lexical else None),
        "documents": stats.documents,
        "languages": dict(sorted(stats.languages.items())),
        "corpus": [{"type": s.type, "path": s.path, "resolved": str(s.resolved),
                    "sha256": s.sha256, "documents": s.documents, "chunks": s.chunks}
                   for s in sources],
        # The full checksums, computed once here; opening checks sizes, `index verify` these.
        "files": {name: file_entry(staging / name) for name in files},
        "versions": package_versions(),
    }
