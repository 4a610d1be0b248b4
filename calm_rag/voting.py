"""Cross-lingual votes and the preference pairs they yield (CALM's self-consistency target).

All parsed answers of a question (every language, every sample) vote; the majority is the
target. Per language, a response that agrees is ``chosen`` and each one that disagrees is
``rejected``: one pair a row, since TRL reads only two responses per row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from calm_rag.config import one_of
from calm_rag.errors import InputError
from calm_rag.languages import normalize_code
from calm_rag.records import Sample, Vote
from calm_rag.registries import CHOSEN_FALLBACKS, TIE_POLICIES, VOTE_PRESETS

TiePolicy = Callable[[list[str], list[Sample], "VoteConfig"], str | None]
UNPARSED = ("ignore", "reject")


@dataclass(frozen=True)
class VoteConfig:
    """Parameters that control the vote and the pairs (the ``vote:`` block)."""

    tie: str = "first-seen"
    """How a tie between answers is settled (a registered tie policy): ``drop`` the question,
    ``first-seen`` (the tied answer met first when reading languages in ``language_order``),
    or ``pivot`` (the pivot language's own answers decide)."""
    language_order: tuple[str, ...] = ("en", "zh", "fr", "de", "it", "ja")
    """The order languages are read in, for ``first-seen`` and pair output; languages not
    listed come after, alphabetically."""
    pivot: str = "en"
    """The pivot language, for ``tie: pivot`` and ``chosen_fallback: pivot``."""
    min_agreement: float = 0.0
    """The share of parsed answers the majority needs, in [0, 1]; below it the question
    abstains (0 keeps every majority)."""
    chosen_fallback: str = "skip"
    """When a language has no response agreeing with the majority (a registered chosen
    fallback): ``skip`` it, or take the ``pivot`` language's agreeing response (then any
    language's)."""
    unparsed: Literal["ignore", "reject"] = "ignore"
    """A response with no extracted answer is ``ignore``d or ``reject``ed."""
    max_pairs_per_question: int | None = None
    """Cap on rows per question (taken round-robin over languages); null: no cap."""

    def __post_init__(self) -> None:
        TIE_POLICIES.check(self.tie, "tie")
        CHOSEN_FALLBACKS.check(self.chosen_fallback, "chosen_fallback")
        one_of("unparsed", self.unparsed, UNPARSED)
        if self.max_pairs_per_question is not None and self.max_pairs_per_question < 1:
            raise InputError("must be at least 1 (or null for no cap)",
                             field="max_pairs_per_question")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InputError(f"must lie in [0, 1], got {self.min_agreement!r}",
                             field="min_agreement")
        order = tuple(_code(code, "language_order") for code in self.language_order)
        if len(set(order)) < len(order):
            raise InputError(f"lists a language twice: {', '.join(order)}",
                             field="language_order")
        object.__setattr__(self, "language_order", order)
        object.__setattr__(self, "pivot", _code(self.pivot, "pivot"))


def _code(code: str, field: str) -> str:
    try:
        return normalize_code(code)
    except InputError as err:
        raise InputError(err.message, field=field, hint=err.hint) from None


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


def vote(samples: list[Sample], config: VoteConfig) -> Vote:
    """The vote on one question in one setting, over all its languages and samples."""
    first = samples[0]
    parsed = [s for s in samples if s.answer is not None]
    ordered = in_language_order(parsed, config.language_order)
    counts: Counter[str] = Counter(s.answer for s in ordered if s.answer is not None)
    by_language: dict[str, Counter[str]] = {}
    for s in parsed:
        if s.answer is not None:
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


PRESETS = VOTE_PRESETS
"""Vote presets by name (``PRESETS["calm"]``): the registry itself (see calm_rag.presets)."""


def preset(name: str) -> VoteConfig:
    """The vote preset ``name`` (``default``, ``calm``, or one a plugin registers)."""
    return VOTE_PRESETS.get(name, field="policy")
