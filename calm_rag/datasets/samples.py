"""Samples on disk: calm_rag's own JSONL, or CALM's sample files; and their alignment check."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from calm_rag.datasets.sample_checks import check_aligned, check_has_text, check_parallel
from calm_rag.errors import InputError
from calm_rag.io import read_jsonl, write_jsonl
from calm_rag.records import Sample


def read_samples(path: str | Path, *, group: str | None = None) -> list[Sample]:
    """Read samples from a samples JSONL, a CALM sample file, or a folder of CALM files
    (``group``: which files of a folder holding several models' or runs' files, by group
    name or file pattern; see :func:`calm_rag.datasets.calm.read_calm_entries`)."""
    from calm_rag.datasets.calm import read_calm_entries

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path, hint="check the SAMPLES path")
    if path.is_dir() or path.suffix == ".json":
        entries = read_calm_entries(path, group=group)
    elif group is not None:
        raise InputError("a group chooses among CALM sample files; this is a samples JSONL",
                         path=path, field="group", hint="leave the group out")
    else:
        entries = [(path, line, Sample.from_dict(obj, path=path, line=line))
                   for line, obj in read_jsonl(path)]
    check_aligned(entries)
    check_parallel(entries, path)
    check_has_text(entries, path)
    return [sample for _, _, sample in entries]


def write_samples(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as JSONL, atomically."""
    return write_jsonl(path, (s.to_dict() for s in samples))
