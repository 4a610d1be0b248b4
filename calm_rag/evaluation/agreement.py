"""Agreement across languages as the field measures it, beside CALM's pairwise consistency.

Each language answers a question with the majority of its own samples (as for consistency).
Krippendorff's alpha treats languages as raters of nominal labels: 1 is perfect agreement,
0 agreement at chance given how often each letter is used, so a model that answers ``A``
everywhere is not called consistent. Answer entropy is, per question, the entropy in bits of
the answers the languages give (0 when all agree; at most log2 of the number of languages).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from calm_rag.evaluation.metrics import _summary, bootstrap_interval
from calm_rag.registries import METRICS


def answer_matrix(rows: list[dict], langs: list[str]) -> np.ndarray:
    """Languages × questions, each answer as a number (NaN where a language gave none)."""
    codes: dict[str, int] = {}
    matrix = np.full((len(langs), len(rows)), np.nan)
    for j, row in enumerate(rows):
        for i, lang in enumerate(langs):
            answer = row["answers"].get(lang)
            if answer is not None:
                matrix[i, j] = codes.setdefault(answer, len(codes))
    return matrix


def nominal_alpha(matrix: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) of a raters × units matrix; NaN when undefined (no unit
    with two ratings, or a single label used throughout)."""
    import krippendorff

    # A unit rated once adds nothing to alpha, but the package counts its label as a value.
    matrix = matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]
    values = matrix[~np.isnan(matrix)]
    if len(np.unique(values)) < 2:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


@METRICS.register("krippendorff_alpha")
def krippendorff_alpha(rows: list[dict], langs: list[str]) -> dict:
    """Krippendorff's alpha, languages as raters (the ``krippendorff`` package), with a
    bootstrap interval over questions."""
    matrix = answer_matrix(rows, langs)
    value = nominal_alpha(matrix)
    low, high = bootstrap_interval(len(rows), lambda idx: nominal_alpha(matrix[:, idx]))
    pairable = int(((~np.isnan(matrix)).sum(axis=0) >= 2).sum())
    return {"value": None if np.isnan(value) else value,
            "ci95": [None if np.isnan(x) else x for x in (low, high)], "n": pairable}


def entropy_of(answers: dict[str, str | None]) -> float:
    """Entropy in bits of the languages' answers to one question; NaN under two answers."""
    counts = np.array(list(Counter(a for a in answers.values() if a is not None).values()),
                      dtype=float)
    if counts.sum() < 2:
        return float("nan")
    shares = counts / counts.sum()
    return float(-(shares * np.log2(shares)).sum())


@METRICS.register("answer_entropy")
def answer_entropy(rows: list[dict], langs: list[str]) -> dict:
    """Mean over questions of the entropy (bits) of the languages' answers; lower is more
    consistent. ``max`` is log2 of the number of languages."""
    scores = [entropy_of(r["answers"]) for r in rows]
    return {**_summary(scores), "skipped": int(sum(np.isnan(s) for s in scores)),
            "max": float(np.log2(len(langs))) if langs else None}
