"""The sampling stage: questions in, extracted Samples out, in one backend call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from calm_rag.errors import InputError
from calm_rag.records import SETTINGS, Question, Sample
from calm_rag.sampling.base import SAMPLERS, Sampler
from calm_rag.sampling.endings import AnswerEnding
from calm_rag.sampling.params import SamplingParams
from calm_rag.sampling.prompts import messages_from_fields, prompt_fields
from calm_rag.vote.answers import DEFAULT_CHAIN, extract_answer

PassagesFor = Callable[[Question], Sequence[str]]
"""Gives the passages to put in a question's prompt (the retriever, in the ``rag`` setting)."""


def sample_questions(
    questions: Sequence[Question],
    sampler: Sampler,
    params: SamplingParams | None = None,
    setting: str = "zero-shot",
    passages_for: PassagesFor | None = None,
    chain: Sequence[str] = DEFAULT_CHAIN,
) -> list[Sample]:
    """Sample every question ``params.n`` times and extract the answers.

    All prompts (every question, every language) go to the sampler in one call. The Samples
    come out question by question, ``index`` 0..n-1, each recording the ``instruction`` and
    ``input`` it was asked with.
    """
    params = params or SamplingParams()
    if setting not in SETTINGS:
        raise InputError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}",
                         field="setting")
    if setting == "rag" and passages_for is None:
        raise InputError("the rag setting needs passages", field="setting",
                         hint="pass passages_for (a retriever) or use setting='zero-shot'")
    fields = [prompt_fields(q, passages_for(q) if passages_for else None) for q in questions]
    chats = [messages_from_fields(*f) for f in fields]
    if params.forced_answer:
        texts = _forced(sampler, chats, params, [AnswerEnding.for_question(q) for q in questions])
    else:
        texts = sampler.generate(chats, params)
    if len(texts) != len(questions) or any(len(t) != params.n for t in texts):
        raise RuntimeError(f"the sampler returned {[len(t) for t in texts]} texts for "
                           f"{len(questions)} prompts x n={params.n}")
    samples = []
    for question, (instruction, input_), responses in zip(questions, fields, texts, strict=True):
        for index, text in enumerate(responses):
            found = extract_answer(text, question.lang, question.options, chain)
            samples.append(Sample(question=question, text=text, index=index, setting=setting,
                                  answer=found.answer, extraction=found.method,
                                  instruction=instruction, input=input_))
    return samples


def _forced(sampler: Sampler, chats: list, params: SamplingParams,
            endings: list[AnswerEnding]) -> list[list[str]]:
    """The texts of a backend that can force the answer's format (``forces_answers``)."""
    if not sampler.forces_answers:
        able = [name for name, cls in SAMPLERS.items() if cls.forces_answers]
        raise InputError(f"the {type(sampler).__name__} backend cannot force the answer format",
                         field="sampling.forced_answer",
                         hint=f"use generator.backend: {' or '.join(able)}, or set "
                              "forced_answer: false" if able else "set forced_answer: false")
    return sampler.generate_forced(chats, params, endings)
