"""The option-scores stage: every evaluation question's options scored once per language.

RankC (Qi et al., EMNLP 2023) compares how two languages *rank* a question's candidates, so it
needs every option's score, not the one answer a response names. The letter scorer of the
log-prob fallback gives them: it is handed each evaluation prompt with an empty response, so
what it scores is the prompt, the language's answer cue ("Answer:", "答案:") and each option's
text after it. Greedy evaluation adds nothing random, so one score per question, language,
setting and model is all there is; the stage is cached under those inputs like the others.
The model is the one the cell sampled: after alignment, the base model with the trained
adapter (merged or not), on the sampler's device (:class:`ScoringModel`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from calm_rag.io import read_jsonl, write_jsonl
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.model_ref import ModelRef
from calm_rag.pipeline.scoring import ScoringModel
from calm_rag.pipeline.stages.context import RunContext
from calm_rag.pipeline.stages.sample import SampleJob, passages_of
from calm_rag.records import Sample

log = logging.getLogger(__name__)

FILE = "option_scores.jsonl"


def _save(folder: Path, rows: list[dict[str, Any]]) -> None:
    write_jsonl(folder / FILE, rows)


def _load(folder: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(folder / FILE, allow_empty=True)]


OPTION_SCORES: Stage[list[dict[str, Any]]] = Stage("option_scores", _save, _load)


def scored_prompts(job: SampleJob) -> list[Sample]:
    """One response-less sample per question of the job, recording its prompt as sampled."""
    from calm_rag.sampling.prompts import prompt_fields

    samples = []
    for question in job.questions:
        instruction, input_ = prompt_fields(question, passages_of(job, question))
        samples.append(Sample(question=question, text="", setting=job.setting,
                              instruction=instruction, input=input_))
    return samples


def option_scores_stage(ctx: RunContext, label: str, job: SampleJob,
                        scoring: ScoringModel) -> list[dict[str, Any]]:
    """Rows ``{question_id, lang, setting, scores: {label: log-prob}}`` of the job's questions
    (read from the cache when its key is there)."""
    prompts = scored_prompts(job)
    if not prompts:
        return []
    template = job.params.chat_template_kwargs
    key = OPTION_SCORES.key(*scoring.key, [(s.instruction, s.input) for s in prompts],
                            [s.question.to_dict() for s in prompts],
                            *([template] if template else []))

    def compute(_: Path) -> list[dict[str, Any]]:
        scores = ctx.scorers.get(scoring).score(prompts, template)
        return [{"question_id": s.question.id, "lang": s.lang, "setting": s.setting,
                 "scores": by_label} for s, by_label in zip(prompts, scores, strict=True)]

    return run_cached(ctx, OPTION_SCORES, label, key, compute)


def score_options(ctx: RunContext, model: ModelRef, jobs: list[SampleJob]
                  ) -> list[dict[str, Any]]:
    """The option scores of every evaluation job by ``model`` (the one that sampled them),
    each row naming its cell (``heldout/before``); nothing for a served model (no weights
    here to score with)."""
    if not jobs or not ctx.experiment.generator.backend_class.reads_local_weights:
        return []
    scoring = ScoringModel.of(ctx.experiment, model)
    rows = []
    for job in jobs:
        cell = str(job.key.cell)
        rows += [{"cell": cell, **row}
                 for row in option_scores_stage(ctx, job.label, job, scoring)]
    ctx.scorers.release()
    return rows
