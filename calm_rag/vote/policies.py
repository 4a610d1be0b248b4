"""Vote policies: who votes on a question's target, and with what weight (``vote.policy``).

A policy is ``fn(questions, vote_config) -> PolicyResult``: it gets the parsed samples of every
question of one setting at once (so a policy may learn from all of them, as Dawid-Skene does)
and scores each question's answers; :func:`calm_rag.vote.voting.decide` takes the best score and
settles ties, abstentions and ``min_agreement`` alike for every policy.

CALM pools every parsed answer, so a language that parses more responses weighs more and a
low-resource language counts as much as a good one (the critique of DCO, arXiv 2603.04678).
The other policies give each language one vote: plain, weighted, or weighted by a reliability
estimated without gold labels.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

from calm_rag.config import at_least
from calm_rag.records import Sample
from calm_rag.registries import TIE_POLICIES, VOTE_POLICIES
from calm_rag.vote.options import VotePolicy, WeightsOptions
from calm_rag.vote.voting import PolicyResult, VoteConfig


@VOTE_POLICIES.register("pooled")
def pooled(questions: list[list[Sample]], config: VoteConfig) -> PolicyResult:
    """CALM's vote: every parsed answer of every language and sample counts one."""
    return PolicyResult([dict(Counter(s.answer for s in q if s.answer)) for q in questions])


def language_answers(samples: list[Sample], config: VoteConfig) -> dict[str, str]:
    """Each language's own majority over its parsed samples; a tie inside a language is
    settled by ``config.tie`` (seeing the whole question, so ``pivot`` can decide), and a
    language whose tie is dropped casts no vote."""
    langs: dict[str, Counter[str]] = {}
    for s in samples:
        if s.answer:
            langs.setdefault(s.lang, Counter())[s.answer] += 1
    answers = {}
    for lang, counts in langs.items():
        top = max(counts.values())
        tied = [a for a, n in counts.items() if n == top]
        answer = tied[0] if len(tied) == 1 else TIE_POLICIES.get(config.tie)(
            tied, samples, config)
        if answer:
            answers[lang] = answer
    return answers


def _weighted(questions: list[list[Sample]], config: VoteConfig,
              weights: dict[str, float]) -> list[dict[str, float]]:
    scores = []
    for samples in questions:
        tally: dict[str, float] = {}
        for lang, answer in language_answers(samples, config).items():
            tally[answer] = tally.get(answer, 0.0) + weights.get(lang, 1.0)
        scores.append(tally)
    return scores


@VOTE_POLICIES.register("language-balanced")
def language_balanced(questions: list[list[Sample]], config: VoteConfig) -> PolicyResult:
    """Each language's own majority is one vote."""
    return PolicyResult(_weighted(questions, config, {}))


def weighted(questions: list[list[Sample]], config: VoteConfig) -> PolicyResult:
    """Each language's own majority counts the weight ``vote.options.weights`` gives it
    (else 1)."""
    given: dict[str, float] = config.options.weights
    langs = {s.lang for q in questions for s in q}
    weights = {lang: given.get(lang, 1.0) for lang in sorted(langs)}
    return PolicyResult(_weighted(questions, config, weights), weights)


VOTE_POLICIES.register("weighted", VotePolicy(weighted, WeightsOptions))


@dataclass(frozen=True)
class DawidSkeneOptions:
    """Options of the ``dawid-skene`` policy (``vote.options`` when ``policy: dawid-skene``)."""

    iterations: int = 100
    """EM iterations at most (crowd-kit's ``n_iter``); it stops earlier once converged."""

    def __post_init__(self) -> None:
        at_least(self, 1, "iterations")


def dawid_skene(questions: list[list[Sample]], config: VoteConfig) -> PolicyResult:
    """Languages as annotators (each with its own majority answer); crowd-kit's Dawid-Skene
    EM estimates each language's confusion matrix from the agreement over all questions, and
    the posterior probability of each answer is its score. A language's weight is its
    estimated accuracy: the prior-weighted diagonal of its confusion matrix.

    It almost never ties: where two languages disagree it sides with the one it estimates
    more reliable, so a two-language vote that ``language-balanced`` reports as a tie gets a
    target here (on CALM's Llama samples, a worse one: see ``calm-rag study votes``)."""
    rows = [(i, lang, answer) for i, samples in enumerate(questions)
            for lang, answer in language_answers(samples, config).items()]
    scores: list[dict[str, float]] = [{} for _ in questions]
    if not rows:
        return PolicyResult(scores, {})
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    given: list[set[str]] = [set() for _ in questions]
    for task, _, answer in rows:
        given[task].add(answer)
    with warnings.catch_warnings():  # crowd-kit's pandas deprecations are not the user's
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model = DawidSkene(n_iter=config.options.iterations).fit(
            pd.DataFrame(rows, columns=["task", "worker", "label"]))
    posterior = model.probas_
    assert posterior is not None  # set by fit
    labels = [str(a) for a in posterior.columns]
    for task, probas in zip(posterior.index, posterior.to_numpy(), strict=True):
        # Only answers some language gave can win (the posterior of the others is ~0).
        scores[int(task)] = {a: float(p) for a, p in zip(labels, probas, strict=True)
                             if a in given[int(task)]}
    return PolicyResult(scores, _reliability(model))


VOTE_POLICIES.register("dawid-skene", VotePolicy(dawid_skene, DawidSkeneOptions))


def _reliability(model) -> dict[str, float]:
    errors, priors = model.errors_, model.priors_
    weights = {}
    for worker in sorted(errors.index.get_level_values("worker").unique()):
        mine = errors.loc[worker]
        weights[str(worker)] = float(sum(priors[c] * mine.at[c, c] for c in priors.index
                                         if c in mine.index))
    return weights
