"""One experiment end to end: sample → answer → vote → pair → align (× rounds) → evaluate →
report, every stage cached, the run folder written whole at the end."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm_rag.experiment import Experiment
from calm_rag.pipeline.cache import StageCache
from calm_rag.pipeline.models import LazySampler, ModelRef
from calm_rag.pipeline.questions import check_questions, log_dropped, split_questions
from calm_rag.pipeline.stages import (
    Round,
    RunContext,
    SampleJob,
    align_stage,
    answers_stage,
    retrieve_stage,
    sample_stage,
)
from calm_rag.records import PreferencePair, Question, Sample, Vote

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """A finished run: its folder and what the report shows."""

    folder: Path
    grid: dict[str, Any]
    rounds: list[Round]
    seconds: float
    stages: list[dict[str, Any]] = field(default_factory=list)


def run_experiment(experiment: Experiment, *, progress: bool = True,
                   source: str | Path | None = None) -> RunResult:
    """Run ``experiment``; write ``<runs_dir>/<name>/<timestamp>/`` and return what it holds."""
    from calm_rag.pipeline.outputs import write_run

    started = time.perf_counter()
    runs = Path(experiment.runs_dir)
    ctx = RunContext(experiment, StageCache(runs / ".cache"), progress=progress)
    log.info(f"experiment {experiment.name}: settings {', '.join(experiment.settings)}")
    ctx.alignment = check_questions(experiment.data, experiment.base_dir)
    log_dropped(ctx.alignment)
    splits = split_questions(ctx.alignment.questions, experiment.data)
    passages = None
    if experiment.retrieval.enabled:
        passages = retrieve_stage(ctx, [q for group in splits.values() for q in group])
    model = ModelRef.resolve(experiment.generator.model, experiment.generator.backend,
                             adapter=getattr(experiment.generator.options, "adapter", None))
    base, rounds, cells = model, [], {}
    for number in range(1, experiment.align.rounds + 1):
        evaluate = _eval_jobs(experiment, splits, passages, "before") if number == 1 else []
        round_, model, before = _round(ctx, number, model, splits["train"], passages, evaluate)
        rounds.append(round_)
        cells.update(before)
    if experiment.align.rounds == 0:
        cells.update(_evaluate(ctx, base, _eval_jobs(experiment, splits, passages, "before")))
    else:
        cells.update(_evaluate(ctx, model, _eval_jobs(experiment, splits, passages, "after")))
    result = RunResult(folder=Path(), grid={}, rounds=rounds, seconds=0.0, stages=ctx.stages)
    result.folder, result.grid = write_run(ctx, splits, cells, rounds, base, model, source)
    result.seconds = time.perf_counter() - started
    return result


def _round(ctx: RunContext, number: int, model: ModelRef, train: list[Question],
           passages: dict | None, evaluate: list[SampleJob]
           ) -> tuple[Round, ModelRef, dict[str, list[Sample]]]:
    """Sample the train questions with ``model`` (plus the before-evaluation, on the same
    engine), vote, pair, and train the next model."""
    from calm_rag.voting import vote_all

    experiment = ctx.experiment
    log.info(f"round {number}: sampling {model.path}")
    jobs = [SampleJob(f"r{number}/train/{setting}", train, setting, experiment.sampling,
                      passages) for setting in experiment.settings]
    sampled = _sample_all(ctx, model, jobs + evaluate)
    samples = [s for job in jobs for s in sampled[job.label]]
    votes = vote_all(samples, experiment.vote)
    rows, pairs = _training_rows(experiment, samples, votes)
    training = None
    if rows:
        model, training = align_stage(ctx, f"round {number}", model, rows)
    else:
        log.info(f"round {number}: nothing to train on (every question unanimous or undecided)")
    cells = _cells(evaluate, sampled)
    return Round(samples, votes, pairs, training), model, cells


def _training_rows(experiment: Experiment, samples: list[Sample], votes: list[Vote]
                   ) -> tuple[list[Any], list[PreferencePair]]:
    from calm_rag.pairs import build_pairs, gold_votes
    from calm_rag.registries import ALIGN_METHODS

    gold = experiment.align.target == "gold"
    target_votes = gold_votes(samples, experiment.vote) if gold else votes
    pairs = build_pairs(samples, target_votes, experiment.vote)
    method = ALIGN_METHODS.get(experiment.align.method, field="align.method")
    return method.rows(samples, target_votes, pairs), pairs


def _evaluate(ctx: RunContext, model: ModelRef, jobs: list[SampleJob]
              ) -> dict[str, list[Sample]]:
    log.info(f"evaluating {model.path}")
    return _cells(jobs, _sample_all(ctx, model, jobs))


def _sample_all(ctx: RunContext, model: ModelRef, jobs: list[SampleJob]
                ) -> dict[str, list[Sample]]:
    """Every job on one engine (started only if some job is not cached), then the answers
    fallback once the engine is stopped."""
    raw = {}
    with LazySampler(ctx.experiment.generator, model) as sampler:
        for job in jobs:
            raw[job.label] = sample_stage(ctx, job, model, sampler)
    scorers: dict[str, Any] = {}
    return {label: answers_stage(ctx, label, samples, key, model, scorers)
            for label, (samples, key) in raw.items()}


def _eval_jobs(experiment: Experiment, splits: dict[str, list[Question]],
               passages: dict | None, phase: str) -> list[SampleJob]:
    return [SampleJob(f"{split}/{phase}/{setting}", splits[split], setting,
                      experiment.evaluation.sampling, passages)
            for split in experiment.evaluation.splits if splits[split]
            for setting in experiment.settings]


def _cells(jobs: list[SampleJob], sampled: dict[str, list[Sample]]
           ) -> dict[str, list[Sample]]:
    """Evaluation samples by cell (``train/before``), both settings together."""
    cells: dict[str, list[Sample]] = {}
    for job in jobs:
        cell = job.label.rsplit("/", 1)[0]
        cells.setdefault(cell, []).extend(sampled[job.label])
    return cells
