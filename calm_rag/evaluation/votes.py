"""What a vote stage decided, counted: targets, ties, abstentions, and how clean the pairs are."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from calm_rag.records import PreferencePair, Vote

if TYPE_CHECKING:
    from calm_rag.vote.voting import Tally, VoteConfig

TIED = ("tie-broken", "tie-dropped")


def vote_counts(votes: Iterable[Vote]) -> dict[str, int]:
    """Questions voted, given a target, tied (settled or dropped) and abstained."""
    votes = list(votes)
    statuses = [v.status for v in votes]
    return {
        "questions_voted": len(votes),
        "targets": sum(v.answer is not None for v in votes),
        "ties": sum(s in TIED for s in statuses),
        "ties_dropped": statuses.count("tie-dropped"),
        "abstained": statuses.count("abstained"),
    }


def target_accuracy(votes: Iterable[Vote]) -> float | None:
    """The share of targets equal to the gold answer, over questions with both."""
    judged = [v.answer == v.gold for v in votes if v.answer is not None and v.gold]
    return sum(judged) / len(judged) if judged else None


def clean_pairs(pairs: Iterable[PreferencePair], gold: dict[str, str | None]) -> int:
    """Pairs whose chosen answer is the gold one and whose rejected answer is not."""
    return sum(1 for p in pairs if gold.get(p.question_id)
               and p.chosen_answer == gold[p.question_id]
               and p.rejected_answer != gold[p.question_id])


def vote_summary(counted: Tally, pairs: list[PreferencePair], config: VoteConfig) -> dict:
    """The vote stage of a run, for its report: policy, targets, ties, pairs, and the weight
    the policy gave each language (as the tally recorded it; none where all weigh alike)."""
    from calm_rag.evaluation.chosen_language import chosen_language

    return {"policy": config.policy, "tie": config.tie, **vote_counts(counted.votes),
            "pairs": len(pairs),
            "language_weights": {k: v for k, v in counted.weights.items() if v},
            "chosen_fallback": config.chosen_fallback, "chosen_language": chosen_language(pairs)}
