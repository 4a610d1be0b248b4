"""The sample stage (resumable in shards) and the answers stage (the log-prob fallback)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.config import non_defaults
from calm_rag.datasets.samples import read_samples, write_samples
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.keys import JobKey, PassageKey
from calm_rag.pipeline.model_ref import LazySampler, ModelRef
from calm_rag.pipeline.scoring import ScoringModel
from calm_rag.pipeline.stages.context import RunContext, passage_key
from calm_rag.records import Question, Sample
from calm_rag.registries import EXTRACTOR_CHAINS
from calm_rag.runtime.hardware import resolve_dtype

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleJob:
    """One sampling stage: these questions, in this setting, with these parameters."""

    key: JobKey
    questions: list[Question]
    params: Any  # SamplingParams
    passages: dict[PassageKey, list[str]] | None = None

    @property
    def setting(self) -> str:
        return self.key.setting

    @property
    def label(self) -> str:
        """How the job shows in logs and the run manifest (``r1/train/zero-shot/en``)."""
        return str(self.key)


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
    from calm_rag.runtime.progress import progress_bar
    from calm_rag.sampling.stage import sample_questions

    shards = _shards(job.questions, ctx.experiment.shard_questions)
    chain = EXTRACTOR_CHAINS.get(ctx.experiment.answers.chain, field="answers.chain")
    reused = sum(len(shard) for i, shard in enumerate(shards)
                 if (work / f"shard-{i:05d}.jsonl").is_file())
    if reused:
        log.info(f"  sample   {job.label}: {reused} prompts read back from a killed run's shards")
    bar = progress_bar(f"sampling {job.label}", len(job.questions), unit="prompt",
                       enabled=ctx.progress)
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
