"""The stage cache: each stage's output lives under a key made of its inputs' content.

A stage's key hashes everything that can change its output (model weights, prompts, sampling
parameters, seed, index manifest, the stage's own config and code version), so a rerun of a
finished experiment finds every output and recomputes nothing, while any change recomputes
exactly the stages it reaches.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from calm_rag.io import atomic_dir

# Bump a stage's version when its code changes what it writes for the same inputs.
STAGE_VERSIONS = {"retrieve": 1, "sample": 1, "answers": 1, "align": 1}


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
