"""Reciprocal-rank fusion: merging rankings that score on different scales.

A dense cosine, a BM25 score and a ranking from another language's query cannot be added, but
their ranks can: each list gives an item ``1 / (k + rank)``, and the sums decide (Cormack et al.,
SIGIR 2009; ``k = 60`` is their constant, which damps the weight of the very first ranks).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T", bound=Hashable)

RRF_K = 60


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
    first_seen = {item: n for n, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], first_seen[pair[0]]))
