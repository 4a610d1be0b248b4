"""The retrieve stage: every question's passages in every language, and the index's freshness."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
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
    (chunk id, document, language, title, text, score, rank; when reranked also
    ``rerank_score`` and ``retrieval_rank``, the rank before reranking)."""

    hits: dict[PassageKey, list[dict[str, Any]]]
    """Question and language → the hits as :meth:`Hit.to_dict` writes them."""

    def passages(self) -> dict[PassageKey, list[str]]:
        """Question and language → the hits' texts, as the prompts put them."""
        return {key: [hit["text"] for hit in found] for key, found in self.hits.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per question and language (``retrieved.jsonl``)."""
        return [{"question_id": key.question_id, "lang": key.lang, "hits": found}
                for key, found in self.hits.items()]

    def recall(self, qrels: dict[str, set[str]]) -> dict[str, tuple[int, int]]:
        """Per language, ``(found, asked)``: of the questions that have relevance labels, how
        many have a relevant document among their hits (all the hits: the run's ``k``)."""
        counts: dict[str, list[int]] = {}
        for key, found in self.hits.items():
            if key.question_id not in qrels:
                continue
            tally = counts.setdefault(key.lang, [0, 0])
            tally[0] += bool({hit["doc_id"] for hit in found} & qrels[key.question_id])
            tally[1] += 1
        return {lang: (found, asked) for lang, (found, asked) in sorted(counts.items())}


def _save_retrieved(folder: Path, retrieved: Retrieved) -> None:
    write_jsonl(folder / "retrieved.jsonl", retrieved.rows())


def _load_retrieved(folder: Path) -> Retrieved:
    return Retrieved({PassageKey(row["question_id"], row["lang"]): row["hits"]
                      for _, row in read_jsonl(folder / "retrieved.jsonl")})


RETRIEVE: Stage[Retrieved] = Stage("retrieve", _save_retrieved, _load_retrieved)


def retrieve_stage(ctx: RunContext, questions: Sequence[Question]) -> Retrieved:
    """Top-k passages for every question and language; the index is built if missing; with
    ``retrieval.rerank`` the first ``top_n`` are reordered by a cross-encoder."""
    from calm_rag.retrieval import Retriever, question_query

    settings = ctx.experiment.retrieval
    rerank = settings.rerank
    key = RETRIEVE.key(ensure_index(ctx), key_settings(settings),
                       [q.to_dict() for q in questions])

    def compute(_: Path) -> Retrieved:
        retriever = Retriever.open(settings.index, index_dir=settings.index_dir)
        english = {q.id: question_query(q) for q in questions if q.lang == "en"}
        queries = [question_query(q) for q in questions]
        hits = retriever.retrieve_many(queries, [english.get(q.id) for q in questions],
                                       k=max(settings.k, rerank.top_n) if rerank.enabled
                                       else settings.k,
                                       policy=settings.policy, hybrid=settings.hybrid,
                                       fusion=settings.fusion)
        found = [[h.to_dict() for h in group] for group in hits]
        if rerank.enabled:
            found = _reranked(rerank, queries, found, settings.k)
        return Retrieved({passage_key(q): group
                          for q, group in zip(questions, found, strict=True)})

    return run_cached(ctx, RETRIEVE, settings.index, key, compute)


def key_settings(settings: Any) -> dict[str, Any]:
    """The retrieval settings as the stage's key holds them. Without reranking the key is
    what it was before ``rerank`` existed, so earlier runs' retrievals stay cached; with it,
    the key also holds the model files' sizes and times, so new weights at the same path
    retrieve again."""
    keyed = dataclasses.asdict(settings) | {"index_dir": None}
    if not settings.rerank.enabled:
        del keyed["rerank"]
    else:
        keyed["rerank"]["files"] = _model_files(settings.rerank.model)
    return keyed


def _reranked(rerank: Any, queries: list[str], found: list[list[dict[str, Any]]],
              k: int) -> list[list[dict[str, Any]]]:
    """The hits reordered by the cross-encoder, which reads each question in its own language
    (the text the prompt asks), whatever the policy searched with."""
    from calm_rag.retrieval.rerank import Reranker

    reranker = Reranker.load(rerank.model, batch_size=rerank.batch_size,
                             trust_remote_code=rerank.trust_remote_code)
    return reranker.rerank_many(queries, found, top_n=rerank.top_n, k=k)


def _model_files(name: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of a model folder's files, or of its snapshot in the local
    hub cache; empty when it is in neither (loading it will then say so)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(name, "config.json")
        if not isinstance(config, str):
            return []
        folder = Path(config).parent
    return [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()]


def relevance_labels(experiment: Any) -> dict[str, set[str]] | None:
    """Question id → its relevant document ids, when the run's questions have them for the
    run's index: the bundled sets label passages of their own bundled corpus, so only an index
    built from exactly that file (same SHA-256) is judged by them; None otherwise, as a label
    naming a passage of another corpus would count every question missed."""
    from calm_rag.retrieval.catalog import locate_index
    from calm_rag.retrieval.corpora import hash_corpus
    from calm_rag.retrieval.manifest import read_manifest

    data, retrieval = experiment.data, experiment.retrieval
    if data.entry is not None or data.chosen_set() is None or not retrieval.enabled:
        return None  # not one of the sets shipped with calm_rag, the only ones labelled
    folder = Path(__file__).resolve().parents[2] / "retrieval" / "data"
    corpus = folder / f"{data.dataset}_corpus.jsonl"
    labels = folder / f"{data.dataset}_qrels.jsonl"
    try:
        sources = read_manifest(locate_index(retrieval.index, retrieval.index_dir))["corpus"]
    except (InputError, OSError):
        return None
    if not (labels.is_file() and len(sources) == 1 and sources[0].get("type") == "jsonl"
            and sources[0].get("sha256") == hash_corpus("jsonl", corpus)):
        return None
    qrels: dict[str, set[str]] = {}
    for _, row in read_jsonl(labels):
        qrels.setdefault(row["question_id"], set()).add(row["passage_id"])
    return qrels


def ensure_index(ctx: RunContext) -> str:
    """Build the experiment's index if it is missing or stale; return its build key.

    Checking a build for staleness loads the embedder (seconds); a stamp of the spec, corpus
    and embedder files' sizes and times, next to the index's own key, skips that check when
    nothing changed since the last run, as make does. (Not a :class:`Stage`: its key is known
    only after the build it stands for, so the cache keeps an empty folder under it.)
    """
    from calm_rag.retrieval import build_index, load_spec
    from calm_rag.retrieval.catalog import find_spec, locate_index
    from calm_rag.retrieval.manifest import read_manifest

    settings, base_dir = ctx.experiment.retrieval, ctx.experiment.base_dir
    spec_path = find_spec(settings.index, settings.index_dir, base_dir)  # from the experiment
    if spec_path is None:  # an index built elsewhere: use it as it is
        try:
            found = locate_index(settings.index, settings.index_dir, base_dir)
        except InputError as err:  # named as the key that asked for it
            raise err.at(field="retrieval.index") from None
        return read_manifest(found)["build_key"][:20]
    spec = load_spec(spec_path)
    stamp = _index_stamp(spec, spec_path, settings.index_dir)
    if stamp and ctx.cache.has("index-check", stamp):
        return stamp.split("-", 1)[0]
    build_index(spec, settings.index_dir, progress=ctx.progress)
    stamp = _index_stamp(spec, spec_path, settings.index_dir)
    if stamp is None:  # build_index writes the manifest _index_stamp reads, or raises
        raise RuntimeError(f"index {spec.name!r} was built but has no manifest")
    with ctx.cache.writing("index-check", stamp):
        pass
    return stamp.split("-", 1)[0]


def _index_stamp(spec: Any, spec_path: Path, index_dir: str | Path) -> str | None:
    """``<build key>-<digest of file stats>`` of a built index, or None when none is built."""
    from calm_rag.models import resolve_embedder
    from calm_rag.retrieval.manifest import read_manifest
    from calm_rag.retrieval.spec import resolve_path

    folder = Path(index_dir) / spec.name  # built where outputs go, wherever its spec is
    if not (folder / "manifest.json").is_file():
        return None
    roots = [spec_path, folder / "manifest.json", Path(resolve_embedder(spec.embedder.model))]
    roots += [resolve_path(source.path, spec.base_dir) for source in spec.corpus]
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for root in roots
             for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    checked = content_key(STAGE_VERSIONS["index-check"], stats)
    return f"{read_manifest(folder)['build_key'][:20]}-{checked}"
