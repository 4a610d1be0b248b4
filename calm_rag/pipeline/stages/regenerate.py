"""``chosen_fallback: regenerate``: a chosen response in the prompt's own language, sampled
again instead of borrowed from the pivot.

For each language with no response agreeing with the target, the language's prompt is asked
again with the target given after the question ("The correct answer is B. Explain why, in
English.", localized; the instruction above already asks for the "Answer: <letter>" ending).
With ``sampling.forced_answer`` on a backend that can force endings, the response must also
end with the target's letter. A regenerated response is kept only if its extracted answer is
the target, the language identifier finds it in the prompt's language, and it does not just
echo the hint; so a Chinese prompt's ``chosen`` is Chinese text, not the English one
``pivot`` borrows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calm_rag.config import non_defaults
from calm_rag.io import read_json, write_json
from calm_rag.languages import get_language
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.model_ref import LazySampler, ModelRef
from calm_rag.pipeline.stages.context import RunContext
from calm_rag.records import Sample, Vote
from calm_rag.registries import EXTRACTOR_CHAINS
from calm_rag.runtime.hardware import resolve_dtype
from calm_rag.sampling.base import Sampler
from calm_rag.sampling.endings import AnswerEnding
from calm_rag.sampling.params import SamplingParams
from calm_rag.sampling.prompts import messages_from_fields
from calm_rag.vote.answers import extract_answer
from calm_rag.vote.pairs import disagrees
from calm_rag.vote.voting import VoteConfig, group_by_question

log = logging.getLogger(__name__)


def answer_hint(lang: str, letter: str) -> str:
    """The localized "the answer is ``letter``: explain why" follow-up
    (``Language.answer_hint``)."""
    language = get_language(lang)
    return language.answer_hint.format(letter=letter, language=language.native_name)


@dataclass(frozen=True)
class Request:
    """One language of one question to sample again: a sample of it (its prompt) and the
    target its new responses must give."""

    sample: Sample
    target: str
    first_index: int
    """The index the first regenerated response takes (after the language's own samples), so
    sample ids stay unique."""


def requests_for(samples: Sequence[Sample], votes: Sequence[Vote],
                 config: VoteConfig) -> list[Request]:
    """The languages that would get a pair but have no response agreeing with the target."""
    decided = {(v.question_id, v.setting): v.answer for v in votes if v.answer is not None}
    requests = []
    for key, group in group_by_question(samples).items():
        target = decided.get(key)
        if target is None:
            continue
        for lang in dict.fromkeys(s.lang for s in group):
            mine = [s for s in group if s.lang == lang]
            if any(s.answer == target for s in mine):
                continue
            if any(disagrees(s, target, config) for s in mine):
                requests.append(Request(mine[0], target, max(s.index for s in mine) + 1))
    return requests


def echoes_hint(text: str, hint: str, letter: str) -> bool:
    """Whether ``text`` repeats the hint's request ("Explain why, in English"): a small model
    often copies it, which passes both checks but explains nothing."""
    request = hint.rsplit(letter, 1)[-1].strip(" .。、")
    return bool(request) and request.casefold() in text.casefold()


def in_language(text: str, lang: str) -> bool:
    """Whether the language identifier finds ``text`` in ``lang``."""
    from calm_rag.retrieval.language_id import written_in

    return written_in(text, get_language(lang).code)


def regenerate(requests: Sequence[Request], sampler: Sampler, params: SamplingParams,
               chain: Sequence[str]) -> list[Sample]:
    """Sample every request ``params.n`` times (one backend call) and keep the responses that
    give the target, in the prompt's language, without echoing the hint."""
    if not requests:
        return []
    hints = [answer_hint(r.sample.lang, r.target) for r in requests]
    inputs = [f"{r.sample.input}\n\n{hint}" for r, hint in zip(requests, hints, strict=True)]
    chats = [messages_from_fields(r.sample.instruction, given)
             for r, given in zip(requests, inputs, strict=True)]
    if params.forced_answer and sampler.forces_answers:
        # The target's letter is the only label the ending allows.
        endings = [dataclasses.replace(AnswerEnding.for_question(r.sample.question),
                                       labels=(r.target,)) for r in requests]
        texts = sampler.generate_forced(chats, params, endings)
    else:
        texts = sampler.generate(chats, dataclasses.replace(params, forced_answer=False))
    kept = []
    for request, hint, given, responses in zip(requests, hints, inputs, texts, strict=True):
        question = request.sample.question
        for offset, text in enumerate(responses):
            found = extract_answer(text, question.lang, question.options, chain)
            if (found.answer != request.target or not in_language(text, question.lang)
                    or echoes_hint(text, hint, request.target)):
                continue
            kept.append(Sample(question=question, text=text, index=request.first_index + offset,
                               setting=request.sample.setting, answer=found.answer,
                               extraction=found.method, instruction=request.sample.instruction,
                               input=given))
    return kept


def regenerate_stage(ctx: RunContext, label: str, model: ModelRef, samples: list[Sample],
                     votes: list[Vote]) -> list[Sample] | None:
    """The regenerated responses for ``vote.chosen_fallback: regenerate`` (cached like the
    sample stage; the engine starts only when something is to be sampled and not cached);
    None under any other fallback."""
    experiment = ctx.experiment
    config = experiment.vote
    if not config.samples_again:
        return None
    requests = requests_for(samples, votes, config)
    if not requests:
        return []
    params = dataclasses.replace(experiment.sampling, n=config.regenerate_tries)
    generator = experiment.generator
    dtype = generator.backend_class.dtype_of(generator.options)
    stage = Stage("regenerate", lambda folder, kept: _save(folder, kept, len(requests), params.n),
                  _load)
    key = stage.key(model.fingerprint, generator.backend,
                    non_defaults(generator.options, skip=("model", "progress")),
                    resolve_dtype(dtype) if dtype else None,
                    [(r.sample.to_dict(), r.target, r.first_index) for r in requests],
                    dataclasses.asdict(params), experiment.answers.chain)

    def compute(_: Path) -> list[Sample]:
        chain = EXTRACTOR_CHAINS.get(experiment.answers.chain, field="answers.chain")
        with LazySampler(generator, model, progress=ctx.progress) as sampler:
            kept = regenerate(requests, sampler.get(), params, chain)
        _log_kept(requests, kept)
        return kept

    return run_cached(ctx, stage, label, key, compute)


def _save(folder: Path, kept: list[Sample], asked: int, tries: int) -> None:
    # JSON, not JSONL: none kept is a valid outcome (the cache refuses empty JSONL files).
    write_json(folder / "regenerated.json",
               {"asked": asked, "tries": tries, "kept": [s.to_dict() for s in kept]})


def _load(folder: Path) -> list[Sample]:
    stored = read_json(folder / "regenerated.json")
    return [Sample.from_dict(row) for row in stored["kept"]]


def _log_kept(requests: Sequence[Request], kept: Sequence[Sample]) -> None:
    asked = Counter(r.sample.lang for r in requests)
    found = Counter((s.question.id, s.setting, s.lang) for s in kept)
    served = Counter(lang for _, _, lang in found)
    log.info("  regenerated: " + ", ".join(
        f"{lang} {served[lang]}/{n}" for lang, n in asked.items())
        + " languages given a chosen response")
