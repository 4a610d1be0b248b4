"""The manifest beside every built index, and the checks made when an index is opened.

``indexes/<name>/manifest.json`` says what the index was built from (spec, corpus hashes), with
what (embedder name, weight fingerprint, dimension, normalization, package versions) and what the
folder holds (each file's size and SHA-256), so an opened index can refuse to run with another
embedder and a truncated or corrupt file is caught before FAISS reads garbage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import expect, expect_list, read_json, safe_name, write_json
from calm_rag.retrieval.faiss_index import METRICS
from calm_rag.retrieval.filling import IVF_DATA_FILE
from calm_rag.runtime.provenance import file_digest

FORMAT = 2
"""2: chunks in ``chunks.arrow`` (+ ``chunk_langs.npy``), BM25 saved; 1: ``chunks.jsonl``."""
READABLE_FORMATS = (1, 2)
KEY_FORMAT = 1
"""The format named in build keys: the chunk layout does not change what an index finds, so an
index built before format 2 from the same inputs is up to date (and read in its own layout)."""
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.arrow"
CHUNK_LANGS_FILE = "chunk_langs.npy"
LEGACY_CHUNKS_FILE = "chunks.jsonl"


def rebuild_hint(manifest: dict[str, Any] | None, folder: Path) -> str:
    """The command that rebuilds this index, as precisely as the manifest allows."""
    spec_path = (manifest or {}).get("spec_path") or f"indexes/{folder.name}.yaml"
    return f"rebuild with: calm-rag index build {spec_path} --out-dir {folder.parent} --force"


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a built index; a folder without one is not an index."""
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError("not a built index (no manifest.json)", path=folder,
                         hint=rebuild_hint(None, folder).replace(" --force", ""))
    try:
        manifest = read_json(path)
    except InputError as err:
        raise InputError(f"unreadable manifest: {err.message}", path=path, line=err.line,
                         hint=rebuild_hint(None, folder)) from None
    if not isinstance(manifest, dict):
        raise InputError("the manifest is not a JSON object", path=path,
                         hint=rebuild_hint(None, folder))
    if manifest.get("format") not in READABLE_FORMATS:
        raise InputError(f"manifest format {manifest.get('format')!r} is not one this calm_rag "
                         f"reads ({', '.join(map(str, READABLE_FORMATS))})", path=path,
                         hint=rebuild_hint(manifest, folder))
    try:
        _check_shape(manifest, path)
    except InputError as err:
        hint = rebuild_hint(manifest if isinstance(manifest.get("spec_path"), str | None)
                            else None, folder)
        raise InputError(f"damaged manifest: {err.message}", path=path, field=err.field,
                         hint=hint) from None
    return manifest


# What the readers of a manifest use: a hand-edited manifest missing one of these (or with the
# wrong type) is refused when read, not met later as a KeyError.
_SHAPE: dict[str, Any] = {
    "name": str, "build_key": str, "built_at": str, "build_seconds": float, "documents": int,
    "description": (str, type(None)), "spec_path": (str, type(None)), "languages": dict,
    "embedder": {"name": str, "fingerprint": str, "dimension": int, "normalize": bool},
    "faiss": {"factory": str, "metric": str, "ntotal": int, "nprobe": int, "ef_search": int},
    "chunks": {"count": int},
}


def _check_shape(manifest: dict[str, Any], path: Path) -> None:
    for key, kind in _SHAPE.items():
        if isinstance(kind, dict):
            group = expect(manifest, key, dict, path)
            for inner, inner_kind in kind.items():
                expect(group, inner, inner_kind, path, prefix=f"{key}.")
        else:
            expect(manifest, key, kind, path)
    for name in expect(manifest, "files", dict, path):
        safe_name(name, field="files")
        entry = expect(manifest["files"], name, dict, path, prefix="files.")
        expect(entry, "bytes", int, path, prefix=f"files.{name}.")
        expect(entry, "sha256", str, path, prefix=f"files.{name}.")
    for index, source in enumerate(expect_list(manifest, "corpus", dict, path)):
        for key, kind in (("type", str), ("path", str), ("sha256", str), ("documents", int)):
            expect(source, key, kind, path, prefix=f"corpus[{index}].")
    _check_values(manifest)


def _check_values(manifest: dict[str, Any]) -> None:
    """Values the code can serve: a well-typed but impossible value (``metric: cosine-ish``,
    ``nprobe: 0``, a chunk count that is not the vector count) is refused when read, not
    served as something else."""
    embedder, faiss, chunks = manifest["embedder"], manifest["faiss"], manifest["chunks"]
    if faiss["metric"] not in METRICS:
        raise InputError(f"{faiss['metric']!r} is not a metric calm_rag searches with "
                         f"({', '.join(METRICS)})", field="faiss.metric")
    if not _FACTORY.fullmatch(faiss["factory"]):
        raise InputError(f"{faiss['factory']!r} is not a FAISS factory string",
                         field="faiss.factory")
    _at_least(embedder, "dimension", 1, "embedder.")
    if expect(faiss, "dimension", int, default=embedder["dimension"], prefix="faiss.") \
            != embedder["dimension"]:
        raise InputError(f"{embedder['dimension']}-dimensional embeddings, but faiss.dimension "
                         f"says the index holds {faiss['dimension']}-dimensional vectors",
                         field="embedder.dimension")
    for key in ("nprobe", "ef_search"):
        _at_least(faiss, key, 1, "faiss.")
    if "k_factor" in faiss:
        _at_least(faiss, "k_factor", 1, "faiss.")
    if "batch_size" in embedder:
        _at_least(embedder, "batch_size", 1, "embedder.")
    _at_least(chunks, "count", 1, "chunks.")
    if faiss["ntotal"] != chunks["count"]:
        raise InputError(f"{chunks['count']} chunks, but faiss.ntotal says the index holds "
                         f"{faiss['ntotal']} vectors (one a chunk)", field="chunks.count")
    _check_languages(manifest)
    _check_listed_files(manifest)


# Factory strings as FAISS writes them ("OPQ64,IVF65536_HNSW32,PQ64", "IVF4,PQ4x4,Refine(SQ8)");
# whether FAISS can build one is asked when the index is opened (FAISS is loaded there).
_FACTORY = re.compile(r"[A-Za-z0-9_,.()+=-]{1,200}")


def _at_least(group: dict[str, Any], key: str, low: int, prefix: str) -> None:
    value = expect(group, key, int, prefix=prefix)
    if value < low:
        raise InputError(f"{value} is less than {low}", field=prefix + key)


def _check_languages(manifest: dict[str, Any]) -> None:
    """Language codes as calm_rag writes them, counts that add up to the chunk count and, in
    format 2, the chunk store's code list naming the same languages (its integers index it)."""
    from calm_rag.retrieval.language_id import language_code

    counts = manifest["languages"]
    for code in counts:
        # A corpus may hold any language (not only those calm_rag prompts in), so a code is
        # refused when it is not in the form the build writes (``language_code``'s).
        if not code or language_code(code) != code:
            raise InputError(f"{code!r} is not a language code as calm_rag writes them",
                             field="languages")
        _at_least(counts, code, 1, "languages.")
    if sum(counts.values()) != manifest["chunks"]["count"]:
        raise InputError(f"the languages' chunks add up to {sum(counts.values())}, but "
                         f"chunks.count is {manifest['chunks']['count']}", field="languages")
    if manifest["format"] == 1:
        return
    codes = expect_list(manifest["chunks"], "language_codes", str, prefix="chunks.")
    if len(set(codes)) != len(codes) or set(codes) != set(counts):
        raise InputError(f"{codes} are not the languages the manifest counts "
                         f"({', '.join(sorted(counts))})", field="chunks.language_codes")


def _check_listed_files(manifest: dict[str, Any]) -> None:
    """Every file a reader opens is listed (with its checksum): an unlisted one would be read
    without ever being checked."""
    files = manifest["files"]
    read = [INDEX_FILE, *((LEGACY_CHUNKS_FILE,) if manifest["format"] == 1
                          else (CHUNKS_FILE, CHUNK_LANGS_FILE))]
    if manifest["faiss"].get("on_disk"):
        read.append(IVF_DATA_FILE)
    lexical = manifest.get("lexical")
    if isinstance(lexical, dict):
        read += expect_list(lexical, "files", str, prefix="lexical.")
    for name in read:
        if name not in files:
            raise InputError(f"{name} is read but not listed with its checksum",
                             field="files")


def verify_files(folder: Path, manifest: dict[str, Any], *, checksums: bool = True) -> None:
    """Every file the manifest lists is there, whole (size) and unchanged (SHA-256)."""
    for name in manifest["files"]:
        check_file(folder, manifest, name, checksum=checksums)


def check_file(folder: Path, manifest: dict[str, Any], name: str, *, checksum: bool) -> None:
    """One listed file is there with its recorded size and, with ``checksum``, its SHA-256."""
    expected = manifest["files"][name]
    path = folder / name
    if not path.is_file():
        raise InputError(f"{name} is missing", path=folder, hint=rebuild_hint(manifest, folder))
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise InputError(f"truncated or corrupt: {size} bytes, the manifest says "
                         f"{expected['bytes']}", path=path, hint=rebuild_hint(manifest, folder))
    if checksum and file_digest(path, remember=False) != expected["sha256"]:
        raise InputError("corrupt: its checksum differs from the manifest's", path=path,
                         hint=rebuild_hint(manifest, folder))


def damaged_hint(manifest: dict[str, Any] | None, folder: Path) -> str:
    """What to do about a listed file that cannot be decoded: check them all, then rebuild."""
    return (f"check its files with: calm-rag index verify {folder}; "
            f"{rebuild_hint(manifest, folder)}")


def check_asked_embedder(manifest: dict[str, Any], folder: Path, asked: str) -> None:
    """The index was built with the embedder the caller names."""
    built = manifest["embedder"]["name"]
    if asked != built:
        raise InputError(f"built with embedder {built!r}, not {asked!r}", path=folder,
                         hint=f"ask for {built!r}, or set embedder.model to {asked!r} in the "
                              f"spec and {rebuild_hint(manifest, folder)}")


def check_embedder(manifest: dict[str, Any], folder: Path, identity: dict[str, Any]) -> None:
    """The embedder about to embed queries is the one that built the index."""
    built = manifest["embedder"]
    hint = rebuild_hint(manifest, folder)
    if identity["dimension"] != built["dimension"]:
        raise InputError(f"built with {built['dimension']}-dimensional embeddings, but "
                         f"{identity['name']!r} gives {identity['dimension']}", path=folder,
                         hint=hint)
    if identity["fingerprint"] != built["fingerprint"]:
        raise InputError(f"the embedder {built['name']!r} has changed since the index was built "
                         "(its weights differ)", path=folder, hint=hint)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    write_json(folder / MANIFEST, manifest)


def summary(manifest: dict[str, Any]) -> str:
    """A few readable lines for ``calm-rag index info``."""
    embedder = manifest["embedder"]
    faiss = manifest["faiss"]
    lines = [
        f"name:       {manifest['name']}",
        (f"chunks:     {manifest['chunks']['count']} from {manifest['documents']} documents "
         f"({', '.join(f'{k} {v}' for k, v in sorted(manifest['languages'].items()))})"),
        (f"embedder:   {embedder['name']} (dim {embedder['dimension']}, "
         f"normalize={embedder['normalize']}, weights {embedder['fingerprint'][:12]})"),
        f"faiss:      {faiss['factory']} metric={faiss['metric']} ntotal={faiss['ntotal']}"
        + ("" if not faiss.get("on_disk") else " (inverted lists on disk)"),
        ("layout:     format 2 (chunks.arrow read by row"
         + (", BM25 saved)" if manifest.get("lexical") else ", no saved BM25)")
         if manifest["format"] == 2 else "layout:     format 1 (chunks.jsonl; rebuild with "
                                         "--force for the on-disk chunk store and saved BM25)"),
        f"built:      {manifest['built_at']} in {manifest['build_seconds']:.1f} s",
        f"spec:       {manifest.get('spec_path') or '-'}",
    ]
    lines += [f"corpus:     {c['type']} {c['path']} ({c['documents']} docs, sha256 "
              f"{c['sha256'][:12]})" for c in manifest["corpus"]]
    return "\n".join(lines)


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, ensure_ascii=False, indent=2)
