"""Preference pairs from votes: per language, agreeing responses against disagreeing ones.

A language with no agreeing response gets its ``chosen`` from the configured chosen fallback:
none (``skip``), the pivot's (``pivot``), or responses sampled again in the language itself
(``regenerate``: :mod:`calm_rag.pipeline.stages.regenerate` samples them and passes them here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from itertools import zip_longest

from calm_rag.errors import InputError
from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.registries import CHOSEN_FALLBACKS
from calm_rag.vote.voting import (
    ChosenFallback,
    VoteConfig,
    chosen_fallback,
    group_by_question,
    in_language_order,
    offline_fallbacks,
    vote_all,
)


def build_pairs(samples: Iterable[Sample], votes: Iterable[Vote], config: VoteConfig,
                regenerated: Iterable[Sample] | None = None) -> list[PreferencePair]:
    """All pairs of every voted question, in question order. ``regenerated``: the responses
    sampled again for ``chosen_fallback: regenerate`` (required by it, unused otherwise)."""
    check_regenerated(config, regenerated)
    decided = {(v.question_id, v.setting): v for v in votes if v.answer is not None}
    again = group_by_question(regenerated or ())
    pairs: list[PreferencePair] = []
    for key, group in group_by_question(samples).items():
        if key in decided:
            pairs += pairs_for_question(group, decided[key], config, again.get(key, []))
    return pairs


def check_regenerated(config: VoteConfig, regenerated: Iterable[Sample] | None) -> None:
    """Refuse ``chosen_fallback: regenerate`` where nothing could sample again."""
    if config.samples_again and regenerated is None:
        raise InputError(f"chosen_fallback {config.chosen_fallback!r} samples again with the "
                         "generator, which only `calm-rag run` has",
                         field="vote.chosen_fallback",
                         hint=f"use {' or '.join(offline_fallbacks())} here, or run the "
                              "experiment with calm-rag run")


def pairs_for_question(samples: list[Sample], vote: Vote, config: VoteConfig,
                       regenerated: list[Sample] | None = None) -> list[PreferencePair]:
    """One row per rejected response, each against an agreeing response (cycled)."""
    check_regenerated(config, regenerated)
    target = vote.answer
    if target is None:  # no target (a dropped tie, an abstention): nothing to prefer
        return []
    ordered = in_language_order(samples, config.language_order)
    again = {s.id for s in regenerated or ()}
    per_language = []
    for lang in dict.fromkeys(s.lang for s in ordered):
        mine = [s for s in ordered if s.lang == lang]
        rejected = [s for s in mine if disagrees(s, target, config)]
        again_here = [s for s in regenerated or () if s.lang == lang]
        chosen = _chosen_for(mine, again_here, ordered, target, config)
        if rejected and chosen:
            per_language.append([_pair(chosen[i % len(chosen)], r, vote, target,
                                       chosen[i % len(chosen)].id in again)
                                 for i, r in enumerate(rejected)])
    if not config.max_pairs_per_question:
        return [pair for batch in per_language for pair in batch]
    # Round-robin over languages, so a cap keeps every language represented; it starts at a
    # language drawn from the question's id, so a cap of 1 spreads over the languages across
    # questions instead of always taking the first language's row.
    start = _stable_index(vote.question_id, len(per_language)) if per_language else 0
    per_language = per_language[start:] + per_language[:start]
    interleaved = [pair for batch in zip_longest(*per_language) for pair in batch if pair]
    return interleaved[: config.max_pairs_per_question]


def _stable_index(key: str, size: int) -> int:
    """The same index in [0, size) for ``key`` in every process (``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % size


def disagrees(sample: Sample, majority: str, config: VoteConfig) -> bool:
    if sample.answer is None:
        return config.unparsed == "reject"
    return sample.answer != majority


def _chosen_for(mine: list[Sample], regenerated: list[Sample], ordered: list[Sample],
                majority: str, config: VoteConfig) -> list[Sample]:
    agreeing = [s for s in mine if s.answer == majority]
    if agreeing:
        return agreeing
    fallback = chosen_fallback(config.chosen_fallback)
    if fallback.samples_again:
        mine = mine + regenerated  # only such a fallback reads the regenerated responses
    return fallback(mine, ordered, majority, config)


@CHOSEN_FALLBACKS.register("skip")
def _skip(mine: list[Sample], ordered: list[Sample], majority: str,
          config: VoteConfig) -> list[Sample]:
    return []


@CHOSEN_FALLBACKS.register("pivot")
def _borrow(mine: list[Sample], ordered: list[Sample], majority: str,
            config: VoteConfig) -> list[Sample]:
    # CALM machine-translated an agreeing response; offline we borrow the pivot's, else any.
    others = [s for s in ordered if s.answer == majority]
    return [s for s in others if s.lang == config.pivot] or others


def _regenerated(mine: list[Sample], ordered: list[Sample], majority: str,
                 config: VoteConfig) -> list[Sample]:
    # ``mine`` holds the language's regenerated responses too (pairs_for_question adds them);
    # the regenerate stage kept only those giving the majority in the prompt's language.
    kept = [s for s in mine if s.answer == majority]
    if kept:
        return kept
    return chosen_fallback(config.regenerate_otherwise, "vote.regenerate_otherwise")(
        mine, ordered, majority, config)


CHOSEN_FALLBACKS.register("regenerate", ChosenFallback(_regenerated, samples_again=True))


def _pair(chosen: Sample, rejected: Sample, vote: Vote, target: str,
          regenerated: bool = False) -> PreferencePair:
    if regenerated:
        source = "regenerated"
    else:
        source = "same-language" if chosen.lang == rejected.lang else f"pivot:{chosen.lang}"
    return PreferencePair(
        question_id=vote.question_id,
        lang=rejected.lang,
        setting=vote.setting,
        instruction=rejected.instruction,
        input=rejected.input,
        chosen=chosen.text,
        rejected=rejected.text,
        chosen_answer=target,
        rejected_answer=rejected.answer,
        vote_counts=dict(vote.counts),
        chosen_sample_id=chosen.id,
        rejected_sample_id=rejected.id,
        chosen_source=source,
    )


def gold_votes(samples: Iterable[Sample], config: VoteConfig) -> list[Vote]:
    """Votes whose answer is each question's gold label: the ``target: gold`` baseline, whose
    pairs prefer correct responses over wrong ones instead of the majority over the rest."""
    # One tally for all questions: a policy like dawid-skene fits once, not per question.
    return [replace(counted, answer=counted.gold, status="gold" if counted.gold else "no-gold")
            for counted in vote_all(samples, config)]
