"""Fusion: one ranking from several (a question and its English pivot, dense and BM25).

Two ways, chosen by :class:`FusionConfig`:

* **score fusion** (``zscore``, the default; ``minmax``): each list's scores are normalized on
  that list alone (z-score: minus the list's mean, over its standard deviation; min-max: onto
  [0, 1]), and an item's fused score is the sum over the lists. A passage that only one list
  ranks first keeps that list's large normalized score, so fusion does not hand the top to a
  passage both lists find middling; an item missing from a list (it was below the list's
  ``depth``) counts that list's lowest normalized score, the most it can have had there.
* **reciprocal-rank fusion** (``rrf``): each list gives an item ``1 / (rrf_k + rank)``
  (Cormack et al., SIGIR 2009, ``rrf_k = 60``). Scale-free, but with a large constant the
  13th of one list and the 20th of the other (1/73 + 1/80) beat either list's first (1/61).

Measured on the bundled sets (bench/results/retrieval_recall.md; chosen on medical, checked on
commonsense): z-score fusion over 100 candidates per list is at least as good as the better of
native and pivot in every language at k = 1, 3, 5 and 10; RRF at 60 over ``max(4k, 20)``
(calm_rag before this) lost up to 15 of 36 questions at k = 1.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from calm_rag.config import at_least

T = TypeVar("T", bound=Hashable)

RRF_K = 60
FusionMethod = Literal["zscore", "minmax", "rrf"]


@dataclass(frozen=True)
class FusionConfig:
    """How the rankings of several query texts (``fused`` policy, ``hybrid``) are merged."""

    combine: FusionMethod = "zscore"
    """``zscore``: sum of each list's z-normalized scores (the default: never below the better
    list on the bundled sets); ``minmax``: sum of each list's scores scaled onto [0, 1];
    ``rrf``: reciprocal-rank fusion, ``1 / (rrf_k + rank)`` summed."""
    depth: int = 100
    """Candidates taken from each list (at least the ``k`` asked for). Deeper lists let a
    passage ranked well by one text but low by the other be found; the normalization sees the
    same candidates whatever ``k`` is, so a passage's fused rank does not depend on ``k``."""
    rrf_k: int = RRF_K
    """``rrf`` only: the constant added to each rank (smaller: the first ranks weigh more)."""

    def __post_init__(self) -> None:
        at_least(self, 1, "depth")
        at_least(self, 0, "rrf_k")

    def fuse(self, rankings: Sequence[Sequence[tuple[T, float]]]) -> list[tuple[T, float]]:
        """The items of ``rankings`` (``(item, score)``, best first; higher scores better),
        each cut at :attr:`depth`, fused, best first."""
        cut = [list(ranking[:self.depth]) for ranking in rankings]
        if self.combine == "rrf":
            return reciprocal_rank_fusion([[item for item, _ in r] for r in cut], k=self.rrf_k)
        return score_fusion(cut, self.combine)


def score_fusion(rankings: Sequence[Sequence[tuple[T, float]]],
                 normalize: Literal["zscore", "minmax"] = "zscore") -> list[tuple[T, float]]:
    """Items of all ``rankings`` ordered by the sum of their per-list normalized scores.

    An item absent from a list counts that list's lowest normalized score (the list was cut
    below it). A list whose scores are all equal adds nothing (every item gets 0 from it).
    Ties keep the order of first appearance, so the result is deterministic.
    """
    normalized = [_normalized([score for _, score in r], normalize) for r in rankings]
    floors = [min(values, default=0.0) for values in normalized]
    scores: dict[T, float] = {}
    for ranking in rankings:
        for item, _ in ranking:
            scores.setdefault(item, sum(floors))
    for ranking, values, floor in zip(rankings, normalized, floors, strict=True):
        for (item, _), value in zip(ranking, values, strict=True):
            scores[item] += value - floor
    return _ordered(scores)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[T]], k: int = RRF_K,
                           weights: Sequence[float] | None = None) -> list[tuple[T, float]]:
    """Items of all ``rankings`` (best first), ordered by fused score, best first.

    Ties keep the order of first appearance (the earlier ranking's better item first), so the
    result is deterministic.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[T, float] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[i]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return _ordered(scores)


def _normalized(scores: list[float], how: Literal["zscore", "minmax"]) -> list[float]:
    """One list's scores on a common scale (all 0 when they do not vary)."""
    if not scores:
        return []
    if how == "minmax":
        low, high = min(scores), max(scores)
        return [(s - low) / (high - low) if high > low else 0.0 for s in scores]
    mean = sum(scores) / len(scores)
    spread = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [(s - mean) / spread if spread > 0 else 0.0 for s in scores]


def _ordered(scores: dict[T, float]) -> list[tuple[T, float]]:
    first_seen = {item: n for n, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], first_seen[pair[0]]))
