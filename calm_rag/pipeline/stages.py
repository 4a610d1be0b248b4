"""The cached stages of a run: retrieve, sample (resumable in shards), answer, align.

Each stage computes its key from its inputs' content first; a key already in the cache means
the stage's output is read back and nothing runs (no model is even loaded). All of them run
through :func:`calm_rag.pipeline.cached.run_cached`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm_rag.config import non_defaults
from calm_rag.datasets.align import Alignment
from calm_rag.datasets.samples import read_samples, write_samples
from calm_rag.experiment import Experiment
from calm_rag.hardware import resolve_dtype
from calm_rag.io import read_jsonl, write_jsonl
from calm_rag.pipeline.cache import STAGE_VERSIONS, StageCache
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.models import LazySampler, ModelRef
from calm_rag.pipeline.scoring import Scorers, ScoringModel
from calm_rag.provenance import content_key
from calm_rag.records import PreferencePair, Question, Sample, Vote
from calm_rag.registries import ALIGN_METHODS, EXTRACTOR_CHAINS
from calm_rag.training.common import TrainResult
from calm_rag.training.config import AlignConfig
from calm_rag.voting import Tally

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage needs: the experiment, the cache, and the log of what ran."""

    experiment: Experiment
    cache: StageCache
    stages: list[dict[str, Any]] = field(default_factory=list)
    progress: bool = True
    alignment: Alignment | None = None
    """What the questions' alignment check kept and dropped (for the manifest and report)."""
    scorers: Scorers = field(default_factory=Scorers)
    """The loaded scoring model (answers fallback, option scores), one at a time."""

    def record(self, stage: str, label: str, key: str, cached: bool, seconds: float) -> None:
        self.stages.append({"stage": stage, "label": label, "key": key, "cached": cached,
                            "seconds": round(seconds, 3)})
        how = "cached" if cached else f"{seconds:.1f} s"
        log.info("  %-8s %-28s %s", stage, label, how)


def passage_key(question: Question) -> str:
    return f"{question.id}/{question.lang}"


# ---------------------------------------------------------------------------- retrieve


@dataclass(frozen=True)
class Retrieved:
    """What the retrieve stage found: per question and language, its hits in rank order
    (chunk id, document, language, title, text, score, rank)."""

    hits: dict[str, list[dict[str, Any]]]
    """``id/lang`` → the hits as :meth:`Hit.to_dict` writes them."""

    def passages(self) -> dict[str, list[str]]:
        """``id/lang`` → the hits' texts, as the prompts put them."""
        return {key: [hit["text"] for hit in found] for key, found in self.hits.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per question and language (``retrieved.jsonl``)."""
        rows = []
        for key, found in self.hits.items():
            qid, _, lang = key.rpartition("/")
            rows.append({"question_id": qid, "lang": lang, "hits": found})
        return rows


def _save_retrieved(folder: Path, retrieved: Retrieved) -> None:
    write_jsonl(folder / "retrieved.jsonl", retrieved.rows())


def _load_retrieved(folder: Path) -> Retrieved:
    return Retrieved({f"{row['question_id']}/{row['lang']}": row["hits"]
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
                                       policy=settings.policy, hybrid=settings.hybrid)
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


# ---------------------------------------------------------------------------- sample


@dataclass(frozen=True)
class SampleJob:
    """One sampling stage: these questions, in this setting, with these parameters."""

    label: str
    questions: list[Question]
    setting: str
    params: Any  # SamplingParams
    passages: dict[str, list[str]] | None = None


def sample_key(ctx: RunContext, job: SampleJob, model: ModelRef) -> str:
    from calm_rag.sampling.prompts import prompt_fields

    generator = ctx.experiment.generator
    prompts = [prompt_fields(q, passages_of(job, q)) for q in job.questions]
    # Options that cannot change a text (how many engines share the prompts) stay out.
    skip = ("progress", *generator.backend_class.options_not_in_key)
    options = non_defaults(generator.options, skip=skip)
    dtype = generator.backend_class.dtype_of(generator.options)  # bf16, fp32: other texts
    return SAMPLE.key(model.fingerprint, generator.backend, options,
                      resolve_dtype(dtype) if dtype else None, prompts,
                      [q.to_dict() for q in job.questions], job.params.cache_fields(),
                      job.setting, ctx.experiment.answers.chain, ctx.experiment.shard_questions)


def passages_of(job: SampleJob, question: Question) -> list[str] | None:
    """The passages the job puts in ``question``'s prompt (none outside the rag setting)."""
    if job.setting != "rag":
        return None
    return (job.passages or {})[passage_key(question)]


def passages_for(job: SampleJob) -> Callable[[Question], list[str]] | None:
    """What gives a question's passages to its prompt: nothing outside the rag setting."""
    if job.setting != "rag":
        return None
    passages = job.passages or {}
    return lambda question: passages[passage_key(question)]


def _save_samples(folder: Path, samples: list[Sample]) -> None:
    write_samples(folder / "samples.jsonl", samples)


def _load_samples(folder: Path) -> list[Sample]:
    return read_samples(folder / "samples.jsonl")


SAMPLE: Stage[list[Sample]] = Stage("sample", _save_samples, _load_samples)
ANSWERS: Stage[list[Sample]] = Stage("answers", _save_samples, _load_samples)


def sample_stage(ctx: RunContext, job: SampleJob, model: ModelRef,
                 sampler: LazySampler) -> tuple[list[Sample], str]:
    """The job's samples (answers from the extraction chain), and the stage key.

    Questions go to the backend in shards of ``shard_questions`` (all their languages in one
    call); each finished shard is written at once into the stage's work folder, so a killed
    run loses at most the shard in flight, and shard ``i`` is seeded ``seed + i`` so a resumed
    run samples what an uninterrupted one would have.
    """
    key = sample_key(ctx, job, model)
    return run_cached(ctx, SAMPLE, job.label, key,
                      lambda work: _sample_shards(ctx, job, sampler, work)), key


def _sample_shards(ctx: RunContext, job: SampleJob, sampler: LazySampler,
                   work: Path) -> list[Sample]:
    from tqdm.auto import tqdm

    from calm_rag.sampling.stage import sample_questions

    shards = _shards(job.questions, ctx.experiment.shard_questions)
    chain = EXTRACTOR_CHAINS.get(ctx.experiment.answers.chain, field="answers.chain")
    reused = sum(len(shard) for i, shard in enumerate(shards)
                 if (work / f"shard-{i:05d}.jsonl").is_file())
    if reused:
        log.info(f"  sample   {job.label}: {reused} prompts read back from a killed run's shards")
    bar = tqdm(total=len(job.questions), desc=f"sampling {job.label}", unit="prompt",
               disable=not ctx.progress)
    with bar:
        for i, shard in enumerate(shards):
            path = work / f"shard-{i:05d}.jsonl"
            if not path.is_file():
                params = dataclasses.replace(job.params, seed=job.params.seed + i)
                samples = sample_questions(shard, sampler.get(), params, job.setting,
                                           passages_for(job), chain)
                write_samples(path, samples)  # atomic: a shard is whole or absent
            bar.update(len(shard))
    return [s for i in range(len(shards)) for s in read_samples(work / f"shard-{i:05d}.jsonl")]


def _shards(questions: list[Question], size: int) -> list[list[Question]]:
    ids = list(dict.fromkeys(q.id for q in questions))
    groups = [set(ids[i : i + size]) for i in range(0, len(ids), size)]
    return [[q for q in questions if q.id in group] for group in groups]


# ---------------------------------------------------------------------------- answers


def answers_stage(ctx: RunContext, label: str, samples: list[Sample], key: str,
                  scoring: ScoringModel, template_kwargs: dict[str, Any] | None = None
                  ) -> list[Sample]:
    """Fill unanswered samples with the log-prob fallback (when configured and needed),
    scored by ``scoring`` (the model that sampled them); ``template_kwargs`` are the
    ``chat_template_kwargs`` they were sampled with (``key``, the sample stage's, holds them
    already)."""
    if ctx.experiment.answers.fallback == "none" or all(s.answer for s in samples):
        return samples
    from calm_rag.sampling.letter_scores import fill_unanswered

    return run_cached(ctx, ANSWERS, label, ANSWERS.key(key, *scoring.key),
                      lambda _: fill_unanswered(samples, ctx.scorers.get(scoring),
                                                template_kwargs))


# ---------------------------------------------------------------------------- align


@dataclass
class Round:
    """What one alignment round produced."""

    samples: list[Sample]
    tally: Tally
    """The votes, and the weight the vote policy gave each language (per setting)."""
    pairs: list[PreferencePair]
    training: TrainResult | None = None
    """The round's training, as :meth:`TrainResult.load` reads its cache folder (None when
    there was nothing to train on)."""
    regenerated: list[Sample] | None = None
    """``vote.chosen_fallback: regenerate``: the responses sampled again and kept (None under
    any other fallback)."""

    @property
    def votes(self) -> list[Vote]:
        return self.tally.votes


# Keys that change how a training runs, not what it trains: not in the align stage's key.
_RUN_ONLY = ("rounds", "launcher", "machine_rank", "main_process_ip", "main_process_port",
             "save_steps", "report_to")


def align_stage(ctx: RunContext, label: str, model: ModelRef, rows: list[Any]
                ) -> tuple[ModelRef, TrainResult]:
    """Train on ``rows`` (what the align method's ``rows`` gave: pairs for DPO, target samples
    for SFT), from ``model`` and its adapter if it has one; the trained model (base + adapter,
    or the merged model with ``align.merge``) and the training."""
    align = align_for_backend(ctx.experiment)
    precision = resolve_dtype("auto") if align.precision == "auto" else align.precision
    # Training renders each prompt as the sampler did (a model's thinking switch, say).
    template = dict(ctx.experiment.sampling.chat_template_kwargs)
    align = dataclasses.replace(align, chat_template_kwargs=template)

    def train(folder: Path) -> TrainResult:
        ctx.scorers.release()  # training loads its own copy of the model
        method = ALIGN_METHODS.get(align.method, field="align.method")
        return _in_folder(method.train(model.path, rows, align, folder, model.adapter),
                          folder, align.method)

    # Trained in place: its checkpoints stay where a resumed run finds them.
    stage = Stage("align", _written_by_training, TrainResult.load, in_place=True)
    key = stage.key(model.fingerprint,
                    align.to_dict() | dict.fromkeys(_RUN_ONLY) | {"precision": precision},
                    [r.to_dict() for r in rows],
                    *([template] if template else []))  # keys without them stay as they were
    result = run_cached(ctx, stage, label, key, train)
    folder = result.folder
    if align.merge:
        return ModelRef(str(folder / "merged"), f"align:{key}"), result
    return ModelRef(model.path, f"align:{key}", adapter=str(folder / "adapter")), result


def _written_by_training(folder: Path, result: TrainResult) -> None:
    """Nothing to add: the trainer wrote the adapter, the log and the plot."""


def _in_folder(result: TrainResult, folder: Path, method: str) -> TrainResult:
    """The method's result, which must be the stage's folder: one written elsewhere would be
    cached as a training that is not there."""
    if not isinstance(result, TrainResult) or result.folder.resolve() != folder.resolve():
        where = getattr(result, "folder", result)
        raise RuntimeError(f"align method {method!r} returned {where!r}, not a TrainResult of "
                           f"the folder it was given ({folder})")
    return result


def align_for_backend(experiment: Experiment) -> AlignConfig:
    """The align block, with ``merge`` on for a backend that loads no adapter (a plugin's
    that says so): it can only sample a merged model."""
    generator = experiment.generator
    if experiment.align.merge or generator.backend_class.loads_adapters:
        return experiment.align
    log.info(f"align.merge: on, the {generator.backend} backend cannot load an adapter")
    return dataclasses.replace(experiment.align, merge=True)
