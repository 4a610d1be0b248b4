"""The stage cache: each stage's output lives under a key made of its inputs' content.

A stage's key hashes everything that can change its output (model weights, prompts, sampling
parameters, seed, index manifest, the stage's own config and code version), so a rerun of a
finished experiment finds every output and recomputes nothing, while any change recomputes
exactly the stages it reaches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.io import atomic_dir

# Bump a stage's version when its code changes what it writes for the same inputs.
STAGE_VERSIONS = {"retrieve": 1, "sample": 1, "answers": 1, "align": 1}

# Files that make a model: weights, config and tokenizer (not READMEs or training logs).
MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".gguf")


def content_key(*parts: Any) -> str:
    """A short hex digest of JSON-able ``parts`` (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot key a {type(value).__name__}")


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def model_fingerprint(name_or_path: str) -> str:
    """The content of a local model folder (its weights, config and tokenizer files), or the
    name itself for a hub id (its revision is the hub's business)."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return f"name:{name_or_path}"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.suffix in MODEL_SUFFIXES):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(file_digest(path).encode())
    return digest.hexdigest()[:20]


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered for the process by (path, size, mtime)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FINGERPRINTS[memo] = digest.hexdigest()
    return _FINGERPRINTS[memo]


@dataclass
class StageCache:
    """Folders ``<root>/<stage>/<key>/``, each written whole or not at all."""

    root: Path

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.folder(stage, key) / "DONE").is_file()

    @contextmanager
    def writing(self, stage: str, key: str) -> Iterator[Path]:
        """A staging folder that becomes the stage's output only when the block succeeds."""
        target = self.folder(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(target) as staging:
            yield staging
            (staging / "DONE").write_text("", encoding="utf-8")

    def work_folder(self, stage: str, key: str) -> Path:
        """Where a long stage keeps finished pieces (shards) until it completes; kept across a
        crash so a rerun resumes, removed once the stage's output is written."""
        folder = self.root / stage / f"{key}.partial"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def drop_work(self, stage: str, key: str) -> None:
        shutil.rmtree(self.root / stage / f"{key}.partial", ignore_errors=True)
