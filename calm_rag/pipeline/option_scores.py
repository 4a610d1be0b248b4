"""The option-scores stage: every evaluation question's options scored once per language.

RankC (Qi et al., EMNLP 2023) compares how two languages *rank* a question's candidates, so it
needs every option's score, not the one answer a response names. The letter scorer of the
log-prob fallback gives them: it is handed each evaluation prompt with an empty response, so
what it scores is the prompt, the language's answer cue ("Answer:", "答案:") and each option's
text after it. Greedy evaluation adds nothing random, so one score per question, language,
setting and model is all there is; the stage is cached under those inputs like the others.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from calm_rag.io import read_jsonl, write_jsonl
from calm_rag.pipeline.models import ModelRef
from calm_rag.pipeline.stages import RunContext, SampleJob, _passages, _scoring_dtype
from calm_rag.provenance import content_key
from calm_rag.records import Sample

log = logging.getLogger(__name__)

VERSION = 1
"""Bump when the stage writes other scores for the same inputs."""
FILE = "option_scores.jsonl"


def scored_prompts(job: SampleJob) -> list[Sample]:
    """One response-less sample per question of the job, recording its prompt as sampled."""
    from calm_rag.sampling.prompts import prompt_fields

    samples = []
    for question in job.questions:
        instruction, input_ = prompt_fields(question, _passages(job, question))
        samples.append(Sample(question=question, text="", setting=job.setting,
                              instruction=instruction, input=input_))
    return samples


def option_scores_stage(ctx: RunContext, label: str, job: SampleJob, model: ModelRef,
                        scorers: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{question_id, lang, setting, scores: {label: log-prob}}`` of the job's questions
    (read from the cache when its key is there)."""
    started = time.perf_counter()
    prompts = scored_prompts(job)
    if not prompts:
        return []
    template = job.params.chat_template_kwargs
    key = content_key("option_scores", VERSION, model.fingerprint, _scoring_dtype(),
                      [(s.instruction, s.input) for s in prompts],
                      [s.question.to_dict() for s in prompts],
                      *([template] if template else []))  # keys without them stay as they were
    if ctx.cache.has("option_scores", key):
        ctx.record("options", label, key, True, time.perf_counter() - started)
        return [row for _, row in read_jsonl(ctx.cache.folder("option_scores", key) / FILE,
                                             allow_empty=True)]
    from calm_rag.sampling.letter_scores import LetterScorer

    if model.fingerprint not in scorers:
        scorers.clear()  # one scoring model in memory at a time
        scorers[model.fingerprint] = LetterScorer.load(model.path, dtype=_scoring_dtype(),
                                                       progress=ctx.progress)
    scores = scorers[model.fingerprint].score(prompts, template)
    rows = [{"question_id": s.question.id, "lang": s.lang, "setting": s.setting,
             "scores": by_label} for s, by_label in zip(prompts, scores, strict=True)]
    with ctx.cache.writing("option_scores", key) as folder:
        write_jsonl(folder / FILE, rows)
    ctx.record("options", label, key, False, time.perf_counter() - started)
    return rows


def score_options(ctx: RunContext, model: ModelRef, jobs: list[SampleJob]
                  ) -> list[dict[str, Any]]:
    """The option scores of every evaluation job, each row naming its cell
    (``heldout/before``); nothing for a served model (no weights here to score with)."""
    if not jobs or ctx.experiment.generator.backend == "openai":
        return []
    scorers: dict[str, Any] = {}
    rows = []
    for job in jobs:
        cell = "/".join(job.label.split("/")[:2])  # split/phase[/setting[/lang]]
        rows += [{"cell": cell, **row}
                 for row in option_scores_stage(ctx, job.label, job, model, scorers)]
    return rows

