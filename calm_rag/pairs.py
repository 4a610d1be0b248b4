"""Preference pairs from votes: per language, agreeing responses against disagreeing ones."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from itertools import zip_longest

from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.registries import CHOSEN_FALLBACKS
from calm_rag.voting import VoteConfig, group_by_question, in_language_order, vote_all


def build_pairs(samples: Iterable[Sample], votes: Iterable[Vote],
                config: VoteConfig) -> list[PreferencePair]:
    """All pairs of every voted question, in question order."""
    decided = {(v.question_id, v.setting): v for v in votes if v.answer is not None}
    pairs: list[PreferencePair] = []
    for key, group in group_by_question(samples).items():
        if key in decided:
            pairs += pairs_for_question(group, decided[key], config)
    return pairs


def pairs_for_question(samples: list[Sample], vote: Vote,
                       config: VoteConfig) -> list[PreferencePair]:
    """One row per rejected response, each against an agreeing response (cycled)."""
    target = vote.answer
    if target is None:  # no target (a dropped tie, an abstention): nothing to prefer
        return []
    ordered = in_language_order(samples, config.language_order)
    per_language = []
    for lang in dict.fromkeys(s.lang for s in ordered):
        mine = [s for s in ordered if s.lang == lang]
        rejected = [s for s in mine if _disagrees(s, target, config)]
        chosen = _chosen_for(mine, ordered, target, config)
        if rejected and chosen:
            per_language.append([_pair(chosen[i % len(chosen)], r, vote, target)
                                 for i, r in enumerate(rejected)])
    if not config.max_pairs_per_question:
        return [pair for batch in per_language for pair in batch]
    # Round-robin over languages, so a cap keeps every language represented.
    interleaved = [pair for batch in zip_longest(*per_language) for pair in batch if pair]
    return interleaved[: config.max_pairs_per_question]


def _disagrees(sample: Sample, majority: str, config: VoteConfig) -> bool:
    if sample.answer is None:
        return config.unparsed == "reject"
    return sample.answer != majority


def _chosen_for(mine: list[Sample], ordered: list[Sample], majority: str,
                config: VoteConfig) -> list[Sample]:
    agreeing = [s for s in mine if s.answer == majority]
    if agreeing:
        return agreeing
    return CHOSEN_FALLBACKS.get(config.chosen_fallback, "vote.chosen_fallback")(
        mine, ordered, majority, config)


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


def _pair(chosen: Sample, rejected: Sample, vote: Vote, target: str) -> PreferencePair:
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
