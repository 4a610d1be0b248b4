"""One experiment end to end: sample → answer → vote → pair → align (× rounds) → evaluate →
report, every stage cached, the run folder written whole at the end."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm_rag.evaluation.cells import Cell
from calm_rag.experiment import Experiment
from calm_rag.pipeline.cache import StageCache
from calm_rag.pipeline.keys import JobKey
from calm_rag.pipeline.model_ref import LazySampler, ModelRef
from calm_rag.pipeline.questions import load_sets, split_questions
from calm_rag.pipeline.scoring import ScoringModel
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
                   source: str | Path | None = None,
                   force: frozenset[str] = frozenset()) -> RunResult:
    """Run ``experiment``; write ``<runs_dir>/<name>/<timestamp>/`` and return what it holds
    (with ``data.language_sets`` or ``align.methods``, one run per set or method and the grid
    comparing them). The stages named in ``force`` are recomputed, their cache entries
    replaced."""
    from calm_rag.pipeline.run_folder import write_run
    from calm_rag.pipeline.stages.option_scores import score_options

    if experiment.data.language_sets:
        from calm_rag.pipeline.language_grid import run_language_grid

        return run_language_grid(experiment, progress=progress, source=source, force=force)
    if experiment.align.methods:
        from calm_rag.pipeline.method_grid import run_method_grid

        return run_method_grid(experiment, progress=progress, source=source, force=force)
    started = time.perf_counter()
    runs = Path(experiment.runs_dir)
    ctx = RunContext(experiment, StageCache(runs / ".cache", force=force), progress=progress)
    log.info(f"experiment {experiment.name}: settings {', '.join(experiment.settings)}")
    # With data.eval the held-out split is that set's; the run folder's alignment lines
    # describe the training set (load_sets logs what either set dropped).
    ctx.alignment, evaluated = load_sets(experiment.data, experiment.base_dir)
    splits = split_questions(ctx.alignment.questions, experiment.data,
                             evaluated.questions if evaluated else None)
    log.info(f"data: {experiment.data.protocol()}")
    passages, retrieved = None, None
    if experiment.retrieval.enabled:
        retrieved = retrieve_stage(ctx, [q for group in splits.values() for q in group])
        passages = retrieved.passages()
    model = ModelRef.resolve(experiment.generator.model, experiment.generator.backend,
                             adapter=experiment.generator.adapter)
    base, rounds = model, []
    cells: dict[Cell, list[Sample]] = {}
    held = experiment.evaluation.heldout_languages  # evaluated, never voted nor trained on
    train = [q for q in splits["train"] if q.lang not in held]
    before = _eval_jobs(experiment, splits, passages, "before")
    for number in range(1, experiment.align.rounds + 1):
        evaluate = before if number == 1 else []
        round_, model, sampled = _round(ctx, number, model, train, passages, evaluate)
        rounds.append(round_)
        cells.update(sampled)
    after = _eval_jobs(experiment, splits, passages, "after") if rounds else []
    if rounds:
        cells.update(_evaluate(ctx, model, after))
    else:
        cells.update(_evaluate(ctx, base, before))
    scores = []
    if experiment.evaluation.option_scores:
        scores = score_options(ctx, base, _per_language(experiment, before))
        scores += score_options(ctx, model, _per_language(experiment, after))
    result = RunResult(folder=Path(), grid={}, rounds=rounds, seconds=0.0, stages=ctx.stages)
    result.folder, result.grid = write_run(ctx, splits, cells, rounds, base, model, source,
                                           option_scores=scores, retrieved=retrieved)
    result.seconds = time.perf_counter() - started
    return result


def _round(ctx: RunContext, number: int, model: ModelRef, train: list[Question],
           passages: dict | None, evaluate: list[SampleJob]
           ) -> tuple[Round, ModelRef, dict[Cell, list[Sample]]]:
    """Sample the train questions with ``model`` (plus the before-evaluation, on the same
    engine), vote, pair, and train the next model."""
    from calm_rag.vote.voting import tally

    experiment = ctx.experiment
    log.info(f"round {number}: sampling {model.path}")
    jobs = [SampleJob(JobKey.training(number, setting), train, experiment.sampling, passages)
            for setting in experiment.settings]
    sampled = _sample_all(ctx, model, jobs + evaluate)
    samples = [s for job in jobs for s in sampled[job.key]]
    counted = tally(samples, experiment.vote)
    rows, pairs, regenerated = _training_rows(ctx, number, model, samples, counted.votes)
    training = None
    if rows:
        model, training = align_stage(ctx, f"round {number}", model, rows)
    else:
        log.info(f"round {number}: nothing to train on (every question unanimous or undecided)")
    cells = _cells(evaluate, sampled)
    return Round(samples, counted, pairs, training, regenerated), model, cells


def _training_rows(ctx: RunContext, number: int, model: ModelRef, samples: list[Sample],
                   votes: list[Vote]
                   ) -> tuple[list[Any], list[PreferencePair], list[Sample] | None]:
    """What the align method trains on, the pairs, and the responses regenerated for them."""
    from calm_rag.pipeline.stages.regenerate import regenerate_stage
    from calm_rag.registries import ALIGN_METHODS
    from calm_rag.vote.pairs import build_pairs, gold_votes

    experiment = ctx.experiment
    gold = experiment.align.target == "gold"
    target_votes = gold_votes(samples, experiment.vote) if gold else votes
    # chosen_fallback: regenerate samples again here (None under any other fallback).
    again = regenerate_stage(ctx, f"r{number}/train", model, samples, target_votes)
    pairs = build_pairs(samples, target_votes, experiment.vote, again)
    method = ALIGN_METHODS.get(experiment.align.method, field="align.method")
    return method.rows(samples, target_votes, pairs), pairs, again


def _evaluate(ctx: RunContext, model: ModelRef, jobs: list[SampleJob]
              ) -> dict[Cell, list[Sample]]:
    log.info(f"evaluating {model.path}")
    return _cells(jobs, _sample_all(ctx, model, jobs))


def _sample_all(ctx: RunContext, model: ModelRef, jobs: list[SampleJob]
                ) -> dict[JobKey, list[Sample]]:
    """Every job on one engine (started only if some job is not cached), then the answers
    fallback once the engine is stopped."""
    parts = {job.key: _per_language(ctx.experiment, [job]) for job in jobs}
    every = [part for group in parts.values() for part in group]
    raw = {}
    with LazySampler(ctx.experiment.generator, model) as sampler:
        for part in every:
            raw[part.key] = sample_stage(ctx, part, model, sampler)
    scoring = ScoringModel.of(ctx.experiment, model)
    filled = {part.key: answers_stage(ctx, part.label, *raw[part.key], scoring,
                                      part.params.chat_template_kwargs) for part in every}
    ctx.scorers.release()
    return {key: [s for part in group for s in filled[part.key]]
            for key, group in parts.items()}


def _per_language(experiment: Experiment, jobs: list[SampleJob]) -> list[SampleJob]:
    """The jobs as they are, or (``data.sample_per_language``) one per language: each
    language's stage key then depends on its own questions only, so runs over other sets of
    languages share it."""
    if not experiment.data.sample_per_language:
        return jobs
    return [dataclasses.replace(job, key=job.key.in_language(lang),
                                questions=[q for q in job.questions if q.lang == lang])
            for job in jobs for lang in dict.fromkeys(q.lang for q in job.questions)]


def _eval_jobs(experiment: Experiment, splits: dict[str, list[Question]],
               passages: dict | None, phase: str) -> list[SampleJob]:
    return [SampleJob(JobKey.evaluation(split, phase, setting), splits[split],
                      experiment.evaluation.sampling, passages)
            for split in experiment.evaluation.splits if splits[split]
            for setting in experiment.settings]


def _cells(jobs: list[SampleJob], sampled: dict[JobKey, list[Sample]]
           ) -> dict[Cell, list[Sample]]:
    """Evaluation samples by cell (``train/before``), both settings together."""
    cells: dict[Cell, list[Sample]] = {}
    for job in jobs:
        assert job.key.cell is not None  # evaluation jobs only
        cells.setdefault(job.key.cell, []).extend(sampled[job.key])
    return cells
