"""The retrieve stage: every question's passages in every language, and the index's freshness."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.io import read_jsonl, write_jsonl
from calm_rag.pipeline.cache import STAGE_VERSIONS
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.keys import PassageKey
from calm_rag.pipeline.stages.context import RunContext, passage_key
from calm_rag.records import Question
from calm_rag.runtime.provenance import content_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retrieved:
    """What the retrieve stage found: per question and language, its hits in rank order
    (chunk id, document, language, title, text, score, rank)."""

    hits: dict[PassageKey, list[dict[str, Any]]]
    """Question and language → the hits as :meth:`Hit.to_dict` writes them."""

    def passages(self) -> dict[PassageKey, list[str]]:
        """Question and language → the hits' texts, as the prompts put them."""
        return {key: [hit["text"] for hit in found] for key, found in self.hits.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per question and language (``retrieved.jsonl``)."""
        return [{"question_id": key.question_id, "lang": key.lang, "hits": found}
                for key, found in self.hits.items()]


def _save_retrieved(folder: Path, retrieved: Retrieved) -> None:
    write_jsonl(folder / "retrieved.jsonl", retrieved.rows())


def _load_retrieved(folder: Path) -> Retrieved:
    return Retrieved({PassageKey(row["question_id"], row["lang"]): row["hits"]
                      for _, row in read_jsonl(folder / "retrieved.jsonl")})


RETRIEVE: Stage[Retrieved] = Stage("retrieve", _save_retrieved, _load_retrieved)


def retrieve_stage(ctx: RunContext, questions: Sequence[Question]) -> Retrieved:
    """Top-k passages for every question and language; the index is built if missing."""
    from calm_rag.retrieval import Retriever, question_query

    settings = ctx.experiment.retrieval
    key = RETRIEVE.key(ensure_index(ctx), dataclasses.asdict(settings) | {"index_dir": None},
                       [q.to_dict() for q in questions])

    def compute(_: Path) -> Retrieved:
        retriever = Retriever.open(settings.index, index_dir=settings.index_dir)
        english = {q.id: question_query(q) for q in questions if q.lang == "en"}
        hits = retriever.retrieve_many([question_query(q) for q in questions],
                                       [english.get(q.id) for q in questions], k=settings.k,
                                       policy=settings.policy, hybrid=settings.hybrid,
                                       fusion=settings.fusion)
        return Retrieved({passage_key(q): [h.to_dict() for h in found]
                          for q, found in zip(questions, hits, strict=True)})

    return run_cached(ctx, RETRIEVE, settings.index, key, compute)


def ensure_index(ctx: RunContext) -> str:
    """Build the experiment's index if it is missing or stale; return its build key.

    Checking a build for staleness loads the embedder (seconds); a stamp of the spec, corpus
    and embedder files' sizes and times, next to the index's own key, skips that check when
    nothing changed since the last run, as make does. (Not a :class:`Stage`: its key is known
    only after the build it stands for, so the cache keeps an empty folder under it.)
    """
    from calm_rag.retrieval import build_index, load_spec
    from calm_rag.retrieval.catalog import locate_index
    from calm_rag.retrieval.manifest import read_manifest

    settings = ctx.experiment.retrieval
    spec_path = Path(settings.index_dir) / f"{settings.index}.yaml"
    if not spec_path.is_file():  # an index built elsewhere: use it as it is
        return read_manifest(locate_index(settings.index, settings.index_dir))["build_key"][:20]
    spec = load_spec(spec_path)
    stamp = _index_stamp(spec, spec_path)
    if stamp and ctx.cache.has("index-check", stamp):
        return stamp.split("-", 1)[0]
    build_index(spec, settings.index_dir, progress=ctx.progress)
    stamp = _index_stamp(spec, spec_path)
    if stamp is None:  # build_index writes the manifest _index_stamp reads, or raises
        raise RuntimeError(f"index {spec.name!r} was built but has no manifest")
    with ctx.cache.writing("index-check", stamp):
        pass
    return stamp.split("-", 1)[0]


def _index_stamp(spec: Any, spec_path: Path) -> str | None:
    """``<build key>-<digest of file stats>`` of a built index, or None when none is built."""
    from calm_rag.models import resolve_embedder
    from calm_rag.retrieval.manifest import read_manifest
    from calm_rag.retrieval.spec import resolve_path

    folder = Path(spec_path).parent / spec.name
    if not (folder / "manifest.json").is_file():
        return None
    roots = [spec_path, folder / "manifest.json", Path(resolve_embedder(spec.embedder.model))]
    roots += [resolve_path(source.path, spec.base_dir) for source in spec.corpus]
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for root in roots
             for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    checked = content_key(STAGE_VERSIONS["index-check"], stats)
    return f"{read_manifest(folder)['build_key'][:20]}-{checked}"
