"""Cross-lingual votes and the preference pairs they yield (CALM's self-consistency target).

A vote policy (``vote.policy``, see :mod:`calm_rag.vote.policies`) scores each answer of a
question; the best-scored answer is the target. CALM's ``pooled`` policy counts every parsed
answer of every language and sample. Per language, a response that agrees is ``chosen`` and
each one that disagrees is ``rejected``: one pair a row, since TRL reads only two responses
per row.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from calm_rag.config import at_least, one_of, typed_by
from calm_rag.errors import InputError
from calm_rag.records import Sample, Vote
from calm_rag.registries import (
    CHOSEN_FALLBACKS,
    TIE_POLICIES,
    VOTE_PRESETS,
    ChosenPick,
)

# VotePolicy, vote_policy and the options classes are also read from here (their old home).
from calm_rag.vote.options import (  # noqa: F401
    NoOptions,
    VotePolicy,
    WeightsOptions,
    language_code,
    policy_option_types,
    policy_options,
    vote_policy,
    with_weights,
)

UNPARSED = ("ignore", "reject")
MAX_REGENERATE_TRIES = 256
"""A language's tries are sampled in one call: its batch holds that many sequences at once."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoteConfig:
    """Parameters that control the vote and the pairs (the ``vote:`` block)."""

    policy: str = "pooled"
    """Who votes (a registered vote policy): ``pooled`` (CALM: every parsed answer of every
    language is one vote), ``language-balanced`` (each language's own majority is one vote),
    ``weighted`` (each language's majority counts its weight in ``options.weights``), or
    ``dawid-skene`` (languages are annotators whose reliability is estimated from their
    agreement over all questions, without gold; crowd-kit's Dawid-Skene)."""
    options: Any = field(default=None, metadata=typed_by("policy", policy_option_types))
    """The policy's options; which keys exist depends on ``policy`` (listed below)."""
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
    """The share of the votes the winner needs, in [0, 1]; below it the question abstains
    (0 keeps every majority). The votes are the parsed answers (``pooled``), the voting
    languages (``language-balanced``), their weights (``weighted``) or the posterior
    probability (``dawid-skene``)."""
    chosen_fallback: str = "skip"
    """When a language has no response agreeing with the majority (a registered chosen
    fallback): ``skip`` it, take the ``pivot`` language's agreeing response (then any
    language's), or ``regenerate`` one in the language itself: sample its prompt again told
    the majority answer, keeping responses that give that answer, that the language
    identifier finds in the prompt's language and that do not just echo the request
    (``calm-rag run`` only: it needs the generator)."""
    regenerate_tries: int = 4
    """For ``chosen_fallback: regenerate``, responses sampled per language that needs one
    (in one call); every one that passes the checks is kept."""
    regenerate_otherwise: str = "skip"
    """For ``chosen_fallback: regenerate``, the chosen fallback for a language none of whose
    regenerated responses passes: ``skip`` (drop its pairs) or ``pivot``."""
    unparsed: Literal["ignore", "reject"] = "ignore"
    """A response with no extracted answer is ``ignore``d or ``reject``ed."""
    max_pairs_per_question: int | None = None
    """Cap on rows per question (taken round-robin over languages); null: no cap."""

    deprecated_keys: ClassVar[tuple[str, ...]] = ("weights",)
    """Old keys it still takes (``weights``: now ``options.weights``); the loader hands
    them on as given."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", policy_options(self.policy, self.options))
        TIE_POLICIES.check(self.tie, "tie")
        CHOSEN_FALLBACKS.check(self.chosen_fallback, "chosen_fallback")
        if chosen_fallback(self.regenerate_otherwise, "regenerate_otherwise").samples_again:
            raise InputError("cannot be a fallback that samples again itself",
                             field="regenerate_otherwise",
                             hint=f"use one of {', '.join(offline_fallbacks())}")
        at_least(self, 1, "regenerate_tries")
        if self.regenerate_tries > MAX_REGENERATE_TRIES:
            raise InputError(f"must be at most {MAX_REGENERATE_TRIES}, got "
                             f"{self.regenerate_tries!r}: a language's tries are sampled in "
                             "one call, so the generator holds them all in memory at once",
                             field="regenerate_tries", hint="e.g. 4 (the default) to 16")
        one_of("unparsed", self.unparsed, UNPARSED)
        if self.max_pairs_per_question is not None and self.max_pairs_per_question < 1:
            raise InputError("must be at least 1 (or null for no cap)",
                             field="max_pairs_per_question")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InputError(f"must lie in [0, 1], got {self.min_agreement!r}",
                             field="min_agreement")
        order = tuple(language_code(code, "language_order") for code in self.language_order)
        if len(set(order)) < len(order):
            raise InputError(f"lists a language twice: {', '.join(order)}",
                             field="language_order")
        object.__setattr__(self, "language_order", order)
        object.__setattr__(self, "pivot", language_code(self.pivot, "pivot"))

    @property
    def samples_again(self) -> bool:
        """Its chosen fallback needs responses sampled again (the generator's)."""
        return chosen_fallback(self.chosen_fallback).samples_again

    @property
    def weights(self) -> dict[str, float]:
        """Deprecated (read ``options.weights``): the per-language weights of a policy that
        weighs languages, else none; code written before the options still reads them."""
        options = self.options
        return dict(options.weights) if isinstance(options, WeightsOptions) else {}


def _init_with_weights(init: Callable[..., None]) -> Callable[..., None]:
    """``VoteConfig(weights=...)`` and ``vote.weights``, written before the options, still
    build (deprecated): the weights become ``options.weights``, their errors name
    ``weights``, and an empty mapping (an old run's ``config.yaml``) is no weights."""

    @functools.wraps(init)
    def __init__(self: VoteConfig, *args: Any, weights: Any = None, **kwargs: Any) -> None:
        if weights is None or weights == {}:
            return init(self, *args, **kwargs)
        if len(args) > 1:
            raise TypeError("VoteConfig(weights=...): pass the options as options=")
        log.warning("vote.weights is deprecated: write vote.options.weights "
                    "(VoteConfig(options={'weights': ...}))")
        kwargs["options"] = with_weights(kwargs.get("options"), weights)
        try:
            return init(self, *args, **kwargs)
        except InputError as err:  # a bad weight: name the key it was given under
            moved = err.field or ""
            if moved != "options.weights" and not moved.startswith("options.weights."):
                raise
            raise InputError(err.message, field=moved.removeprefix("options."),
                             hint=err.hint) from None

    return __init__


VoteConfig.__init__ = _init_with_weights(VoteConfig.__init__)  # type: ignore[method-assign]


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


@dataclass(frozen=True)
class ChosenFallback:
    """A chosen fallback as registered: how it picks, and whether it needs the generator.

    A plain function registered in ``CHOSEN_FALLBACKS`` picks from the samples at hand."""

    pick: ChosenPick
    samples_again: bool = False
    """It picks from responses sampled again for the purpose, which only ``calm-rag run``
    (which has the generator) can give it."""

    def __call__(self, mine: list[Sample], ordered: list[Sample], majority: str,
                 config: VoteConfig) -> list[Sample]:
        return self.pick(mine, ordered, majority, config)


def chosen_fallback(name: str, field: str = "vote.chosen_fallback") -> ChosenFallback:
    """The registered chosen fallback ``name``, with what it needs."""
    item = CHOSEN_FALLBACKS.get(name, field)
    return item if isinstance(item, ChosenFallback) else ChosenFallback(item)


def offline_fallbacks() -> list[str]:
    """The chosen fallbacks that need no generator (what ``calm-rag vote`` offers)."""
    return [name for name in CHOSEN_FALLBACKS if not chosen_fallback(name).samples_again]


@dataclass
class PolicyResult:
    """What a vote policy returns for the questions of one setting."""

    scores: list[dict[str, float]]
    """Per question (in the order given), each answer's score; the best one wins."""
    weights: dict[str, float] | None = None
    """Per language, the weight or reliability the policy gave it (None: all alike)."""


@dataclass
class Tally:
    """The votes of a sample set and, per setting, the weights the policy gave languages."""

    votes: list[Vote]
    weights: dict[str, dict[str, float] | None]


def vote(samples: list[Sample], config: VoteConfig) -> Vote:
    """The vote on one question in one setting, over all its languages and samples (a
    policy that learns from many questions, like ``dawid-skene``, sees only this one)."""
    return tally(samples, config).votes[0]


def vote_all(samples: Iterable[Sample], config: VoteConfig) -> list[Vote]:
    """One vote per question and setting."""
    return tally(samples, config).votes


def tally(samples: Iterable[Sample], config: VoteConfig) -> Tally:
    """Votes per question and setting; the policy sees a setting's questions together."""
    groups = group_by_question(samples)
    policy = vote_policy(config.policy)
    settings: dict[str, list[tuple[str, str]]] = {}
    for key in groups:
        settings.setdefault(key[1], []).append(key)
    votes: dict[tuple[str, str], Vote] = {}
    weights: dict[str, dict[str, float] | None] = {}
    for setting, keys in settings.items():
        result = policy([parsed_samples(groups[k]) for k in keys], config)
        weights[setting] = result.weights
        for key, scores in zip(keys, result.scores, strict=True):
            votes[key] = _vote(groups[key], scores, config)
    return Tally([votes[key] for key in groups], weights)


def parsed_samples(samples: list[Sample]) -> list[Sample]:
    """The samples with an answer (the ones that vote)."""
    return [s for s in samples if s.answer is not None]


def _vote(samples: list[Sample], scores: dict[str, float], config: VoteConfig) -> Vote:
    first = samples[0]
    parsed = parsed_samples(samples)
    ordered = in_language_order(parsed, config.language_order)
    counts: Counter[str] = Counter(s.answer for s in ordered if s.answer is not None)
    by_language: dict[str, Counter[str]] = {}
    for s in parsed:
        if s.answer is not None:
            by_language.setdefault(s.lang, Counter())[s.answer] += 1
    answer, status = decide(scores, parsed, config)
    return Vote(question_id=first.question.id, setting=first.setting, answer=answer,
                status=status, counts=dict(counts),
                by_language={k: dict(v) for k, v in sorted(by_language.items())},
                n_responses=len(samples), n_parsed=len(parsed), gold=first.question.answer)


def decide(scores: dict[str, float], parsed: list[Sample],
           config: VoteConfig) -> tuple[str | None, str]:
    """The winner of ``scores`` and the vote's status; a tie goes to ``config.tie``."""
    total = sum(scores.values())
    if not scores or total <= 0:
        return None, "no-answers"
    top = max(scores.values())
    # Weights and posteriors are floats: equal up to rounding is a tie.
    tied = [a for a, n in scores.items() if math.isclose(n, top, rel_tol=1e-9, abs_tol=1e-12)]
    answer: str | None
    if len(tied) == 1:
        answer, status = tied[0], "majority"
    else:
        answer = TIE_POLICIES.get(config.tie)(tied, parsed, config)
        status = "tie-broken" if answer else "tie-dropped"
    if answer and top / total < config.min_agreement:
        return None, "abstained"
    return answer, status


def group_by_question(samples: Iterable[Sample]) -> dict[tuple[str, str], list[Sample]]:
    """Samples keyed by (question id, setting), in reading order."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.question.id, sample.setting), []).append(sample)
    return groups


PRESETS = VOTE_PRESETS
"""Vote presets by name (``PRESETS["calm"]``): the registry itself (see calm_rag.vote.presets)."""


def preset(name: str) -> VoteConfig:
    """The vote preset ``name`` (``default``, ``calm``, or one a plugin registers)."""
    return VOTE_PRESETS.get(name, field="policy")
