"""Where indexes live: finding one by name or path, and listing specs and built indexes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.retrieval.manifest import MANIFEST, read_manifest

INDEX_DIR_ENV = "CALM_RAG_INDEX_DIR"
SPEC_SUFFIXES = (".yaml", ".yml")


def default_index_dir() -> Path:
    """``$CALM_RAG_INDEX_DIR``, else ``indexes`` in the working directory."""
    return Path(os.environ.get(INDEX_DIR_ENV) or "indexes")


def spec_places(index_dir: str | Path, base_dir: str | Path | None = None) -> list[Path]:
    """Where an experiment's index specs are looked for, in order: ``index_dir`` under the
    experiment file's folder and under each folder above it (a clone's ``pipelines/`` beside
    its ``indexes/``: a spec is an input, found from the experiment file), then ``index_dir``
    itself (relative to the current folder, where indexes are built)."""
    index_dir = Path(index_dir)
    if index_dir.is_absolute() or base_dir is None:
        return [index_dir]
    start = Path(base_dir).resolve()
    places = [folder / index_dir for folder in (start, *start.parents)]
    return list(dict.fromkeys([*places, index_dir.resolve()]))


def find_spec(name: str, index_dir: str | Path, base_dir: str | Path | None = None
              ) -> Path | None:
    """The spec ``<name>.yaml`` (or ``.yml``) of an experiment's index: the first in
    :func:`spec_places`, or None when there is none."""
    for place in spec_places(index_dir, base_dir):
        for suffix in SPEC_SUFFIXES:
            if (place / f"{name}{suffix}").is_file():
                return place / f"{name}{suffix}"
    return None


def locate_index(name_or_path: str | Path, index_dir: str | Path | None = None,
                 base_dir: str | Path | None = None) -> Path:
    """The folder of a built index, given its folder, its name in ``index_dir`` or its spec
    (``base_dir``, an experiment's folder, is where the hint looks for specs too)."""
    index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
    given = Path(name_or_path)
    if (given / MANIFEST).is_file():
        return given
    if given.suffix in SPEC_SUFFIXES and given.is_file():
        from calm_rag.retrieval.spec import load_spec

        given = Path(load_spec(given).name)
    candidate = index_dir / given
    if candidate.is_dir():
        return candidate
    built = [entry.name for entry in list_indexes(index_dir) if entry.built]
    spec = find_spec(str(given), index_dir, base_dir)
    raise InputError(f"no built index named {str(name_or_path)!r} in {index_dir}"
                     + ("" if spec else ", nor a spec to build it from"),
                     hint=_build_hint(str(given), spec, index_dir, base_dir)
                          + (f"; built here: {', '.join(built)}" if built else ""))


def _build_hint(name: str, spec: Path | None, index_dir: Path,
                base_dir: str | Path | None) -> str:
    """A command that builds it from the spec found, or the spec to write."""
    if spec is not None:
        out = "" if spec.parent.resolve() == index_dir.resolve() else f" --out-dir {index_dir}"
        return f"build it with: calm-rag index build {spec}{out}"
    beside = ", here or beside the experiment," if base_dir is not None else ""
    return (f"write {index_dir / name}.yaml{beside} and build it with calm-rag index build, "
            "or name a built index")


def index_source(name: str, index_dir: str | Path, base_dir: str | Path | None = None
                 ) -> Path:
    """Where a run's index comes from, read from the disk only (no index, no model loaded):
    its spec (the run builds the index from it, or rebuilds a stale one), else its built
    folder; the one-line missing-index error when there is neither."""
    spec = find_spec(name, index_dir, base_dir)
    return spec if spec is not None else locate_index(name, index_dir, base_dir)


@dataclass(frozen=True)
class IndexEntry:
    """One line of ``calm-rag index list``."""

    name: str
    spec: Path | None
    built: bool
    status: str
    """``built``, ``not built`` or what is wrong with the folder."""
    chunks: int | None = None
    embedder: str = ""
    factory: str = ""
    description: str = ""


def list_indexes(index_dir: str | Path | None = None) -> list[IndexEntry]:
    """Every spec (``*.yaml``) and every built index in ``index_dir``, by name."""
    from calm_rag.retrieval.spec import load_spec

    index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
    if not index_dir.is_dir():
        return []
    specs: dict[str, tuple[Path, str]] = {}
    for path in sorted(p for p in index_dir.iterdir() if p.suffix in SPEC_SUFFIXES):
        try:
            spec = load_spec(path)
            specs[spec.name] = (path, spec.description)
        except InputError as err:
            specs[path.stem] = (path, f"(invalid spec: {err.message})")
    folders = {p.name: p for p in index_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return [_entry(name, specs.get(name), folders.get(name)) for name in sorted({*specs, *folders})]


def _entry(name: str, spec: tuple[Path, str] | None, folder: Path | None) -> IndexEntry:
    spec_path, about = spec if spec else (None, "")
    if folder is None:
        return IndexEntry(name, spec_path, built=False, status="not built", description=about)
    try:
        manifest = read_manifest(folder)
    except InputError as err:
        return IndexEntry(name, spec_path, built=False, status=f"broken: {err.message}")
    return IndexEntry(name, spec_path, built=True, status="built",
                      chunks=manifest["chunks"]["count"], embedder=manifest["embedder"]["name"],
                      factory=manifest["faiss"]["factory"], description=manifest["description"])

