"""Cross-lingual votes and the preference pairs they yield (CALM's self-consistency target).

All parsed answers of a question (every language, every sample) vote; the majority is the
target. Per language, a response that agrees is ``chosen`` and each one that disagrees is
``rejected``: one pair a row, since TRL reads only two responses per row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from calm_rag.errors import InputError
from calm_rag.languages import normalize_code
from calm_rag.records import Sample, Vote
from calm_rag.registry import Registry

TiePolicy = Callable[[list[str], list[Sample], "VoteConfig"], str | None]
TIE_POLICIES: Registry[TiePolicy] = Registry("tie policy")
CHOSEN_FALLBACKS = ("skip", "pivot")
UNPARSED = ("ignore", "reject")


@dataclass(frozen=True)
class VoteConfig:
    """Parameters that control the vote and the pairs.

    Parameters that control the vote:
        tie: how a tie between answers is settled: ``drop`` the question, ``first-seen`` (the
            tied answer met first when reading languages in ``language_order``), or ``pivot``
            (the pivot language's own answers decide).
        language_order: the order languages are read in, for ``first-seen`` and pair output.
            Languages not listed come after, alphabetically.
        pivot: the pivot language, for ``tie: pivot`` and ``chosen_fallback: pivot``.
        min_agreement: the share of parsed answers the majority needs; below it the question
            abstains (0 keeps every majority).
    Parameters that control the pairs:
        chosen_fallback: when a language has no response agreeing with the majority: ``skip``
            it, or take the ``pivot`` language's agreeing response (then any language's).
        unparsed: a response with no extracted answer is ``ignore``d or ``reject``ed.
        max_pairs_per_question: cap on rows per question (taken round-robin over languages).
    """

    tie: str = "first-seen"
    language_order: tuple[str, ...] = ("en", "zh", "fr", "de", "it", "ja")
    pivot: str = "en"
    min_agreement: float = 0.0
    chosen_fallback: str = "skip"
    unparsed: str = "ignore"
    max_pairs_per_question: int | None = None

    def __post_init__(self) -> None:
        TIE_POLICIES.get(self.tie, field="tie")
        _one_of("chosen_fallback", self.chosen_fallback, CHOSEN_FALLBACKS)
        _one_of("unparsed", self.unparsed, UNPARSED)
        if self.max_pairs_per_question is not None and self.max_pairs_per_question < 1:
            raise InputError("must be at least 1 (or null for no cap)",
                             field="max_pairs_per_question")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InputError("must lie between 0 and 1", field="min_agreement")
        order = tuple(normalize_code(code) for code in self.language_order)
        object.__setattr__(self, "language_order", order)
        object.__setattr__(self, "pivot", normalize_code(self.pivot))

    @classmethod
    def from_dict(cls, values: dict) -> VoteConfig:
        """Build from config values; an unknown key names itself and what is allowed."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise InputError(f"unknown key; allowed: {', '.join(sorted(known))}",
                                 field=f"vote.{key}")
        return cls(**values)


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{value!r} is not allowed; use one of {', '.join(allowed)}", field=key)


def in_language_order(samples: Iterable[Sample], order: tuple[str, ...]) -> list[Sample]:
    """Samples sorted by language (in ``order``, then the rest) and sample index, stably."""
    rank = {code: i for i, code in enumerate(order)}
    return sorted(samples, key=lambda s: (rank.get(s.lang, len(rank)), s.lang, s.index))


@TIE_POLICIES.register("drop")
def _tie_drop(tied: list[str], samples: list[Sample], config: VoteConfig) -> str | None:
    return None


@TIE_POLICIES.register("first-seen")
def _tie_first_seen(tied: list[str], samples: list[Sample], config: VoteConfig) -> str | None:
    return next(s.answer for s in in_language_order(samples, config.language_order)
                if s.answer in tied)


@TIE_POLICIES.register("pivot")
def _tie_pivot(tied: list[str], samples: list[Sample], config: VoteConfig) -> str | None:
    counts = Counter(s.answer for s in samples if s.lang == config.pivot and s.answer in tied)
    ranked = counts.most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None  # the pivot is silent or tied itself: no honest winner
    return ranked[0][0]


# CALM's released pairs, after get_final_ans and construct_DPO_data_ in the authors'
# utils/votingfunc.py (github.com/wangym2/CALM, commit 9d2bac4; "L107" is its line 107):
# - one pooled vote over every language's answers, lone characters such as "X" included, which
#   can win (L103-105); the pooling order is not in their repository: ja, fr, it, cn, de, en
#   is one of the 60 orders (all with ja first) under which their Llama pairs rebuild exactly;
# - a tie goes to the answer counted first in that order (L107: max() keeps the first key);
# - every response whose answer differs is rejected, one row each, in item then response order
#   (L220-229); responses without an answer are left out (get_ans records nothing for them);
# - the chosen text was a machine translation of the last agreeing response (L110-112,
#   L248-250), whose option line says E whenever the vote is not A-D (L288-297): offline a
#   language without an agreeing response borrows the pivot's instead.
PRESETS = {
    "default": VoteConfig(),
    "calm": VoteConfig(language_order=("ja", "fr", "it", "zh", "de", "en"),
                       chosen_fallback="pivot"),
}


def preset(name: str) -> VoteConfig:
    if name not in PRESETS:
        raise InputError(f"unknown policy {name!r}; choose one of {', '.join(PRESETS)}",
                         field="policy")
    return PRESETS[name]


def vote(samples: list[Sample], config: VoteConfig) -> Vote:
    """The vote on one question in one setting, over all its languages and samples."""
    first = samples[0]
    parsed = [s for s in samples if s.answer is not None]
    counts = Counter(s.answer for s in in_language_order(parsed, config.language_order))
    by_language: dict[str, dict[str, int]] = {}
    for s in parsed:
        by_language.setdefault(s.lang, Counter())[s.answer] += 1
    answer, status = _decide(counts, parsed, config)
    return Vote(question_id=first.question.id, setting=first.setting, answer=answer,
                status=status, counts=dict(counts),
                by_language={k: dict(v) for k, v in sorted(by_language.items())},
                n_responses=len(samples), n_parsed=len(parsed), gold=first.question.answer)


def _decide(counts: Counter, parsed: list[Sample], config: VoteConfig) -> tuple[str | None, str]:
    if not counts:
        return None, "no-answers"
    top = max(counts.values())
    tied = [answer for answer, n in counts.items() if n == top]
    if len(tied) == 1:
        answer, status = tied[0], "majority"
    else:
        answer = TIE_POLICIES.get(config.tie)(tied, parsed, config)
        status = "tie-broken" if answer else "tie-dropped"
    if answer and top / len(parsed) < config.min_agreement:
        return None, "abstained"
    return answer, status


def group_by_question(samples: Iterable[Sample]) -> dict[tuple[str, str], list[Sample]]:
    """Samples keyed by (question id, setting), in reading order."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.question.id, sample.setting), []).append(sample)
    return groups


def vote_all(samples: Iterable[Sample], config: VoteConfig) -> list[Vote]:
    """One vote per question and setting."""
    return [vote(group, config) for group in group_by_question(samples).values()]
