"""Accuracy per language, CALM's cross-lingual consistency, and bootstrap intervals.

Accuracy is per sample (unparsed counts as wrong). Consistency follows CALM: for each question,
the share of language pairs that give the same answer, each language answering with the
majority of its own samples; then the mean over questions. Unlike CALM's script, languages
that gave no parsable answer are left out cleanly, and a question with fewer than two such
languages is skipped (CALM divided by zero there) and counted in ``skipped``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations

import numpy as np

from calm_rag.evaluation.metric_spec import metric, metric_spec
from calm_rag.records import Sample
from calm_rag.vote.voting import group_by_question

BOOTSTRAP_RESAMPLES = 1000


def language_answer(samples: list[Sample]) -> str | None:
    """A language's answer to a question: the majority of its parsed samples (first on ties)."""
    counts = Counter(s.answer for s in sorted(samples, key=lambda s: s.index) if s.answer)
    return counts.most_common(1)[0][0] if counts else None


def per_question(samples: Iterable[Sample]) -> dict[str, list[dict]]:
    """For each setting, one row per question: gold, and per language its answer and accuracy."""
    settings: dict[str, list[dict]] = {}
    for (qid, setting), group in group_by_question(samples).items():
        langs: dict[str, list[Sample]] = {}
        for s in group:
            langs.setdefault(s.lang, []).append(s)
        gold = group[0].question.answer
        settings.setdefault(setting, []).append({
            "question_id": qid,
            "gold": gold,
            "answers": {lang: language_answer(ss) for lang, ss in langs.items()},
            "accuracy": {lang: (np.mean([s.answer == gold for s in ss]) if gold else np.nan)
                         for lang, ss in langs.items()},
            "parsed": {lang: sum(s.answer is not None for s in ss) / len(ss)
                       for lang, ss in langs.items()},
        })
    return settings


def consistency_of(answers: dict[str, str | None], gold: str | None = None) -> tuple[float, float]:
    """(share of agreeing language pairs, share agreeing on the gold answer); NaN under 2."""
    parsed = {lang: a for lang, a in answers.items() if a is not None}
    pairs = list(combinations(sorted(parsed), 2))
    if not pairs:
        return np.nan, np.nan
    same = [parsed[a] == parsed[b] for a, b in pairs]
    correct = [parsed[a] == parsed[b] == gold for a, b in pairs] if gold else [np.nan]
    return float(np.mean(same)), float(np.mean(correct))


def bootstrap_ci(values: np.ndarray, seed: int = 0,
                 resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% percentile interval of the mean over questions (NaNs left out)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return _interval(means)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def bootstrap_interval(n: int, statistic: Callable[[np.ndarray], float], seed: int = 0,
                       resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% percentile interval of ``statistic(question_indices)`` over resampled questions,
    for a statistic that is not a mean (Krippendorff's alpha); undefined resamples (NaN) are
    left out."""
    if n < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(idx) for idx in rng.integers(0, n, (resamples, n))])
    draws = draws[~np.isnan(draws)]
    if len(draws) < 2:
        return (float("nan"), float("nan"))
    return _interval(draws)


def value_summary(values: Iterable[float]) -> dict:
    """The mean of ``values`` (NaN left out), its bootstrap interval and count."""
    array = np.asarray(list(values), dtype=float)
    kept = array[~np.isnan(array)]
    interval = [None if np.isnan(x) else x for x in bootstrap_ci(array)]  # JSON has no NaN
    return {"value": float(kept.mean()) if len(kept) else None,
            "ci95": interval, "n": int(len(kept))}


def agreement_matrix(rows: list[dict], langs: list[str]) -> dict[str, dict[str, float | None]]:
    """Share of questions on which two languages give the same parsed answer."""
    matrix: dict[str, dict[str, float | None]] = {a: {} for a in langs}
    for a in langs:
        for b in langs:
            both = [(r["answers"].get(a), r["answers"].get(b)) for r in rows]
            both = [(x, y) for x, y in both if x is not None and y is not None]
            matrix[a][b] = float(np.mean([x == y for x, y in both])) if both else None
    return matrix


@metric("accuracy", better="higher", per_language=True,
        aggregation="per language: mean over its samples of answering the gold label")
def accuracy(rows: list[dict], langs: list[str]) -> dict:
    """Per language, the share of samples answering the gold label, with its interval."""
    return {lang: value_summary(r["accuracy"].get(lang, np.nan) for r in rows) for lang in langs}


@metric("extraction_rate", better="higher", per_language=True,
        aggregation="per language: share of its samples whose answer was read")
def extraction_rate(rows: list[dict], langs: list[str]) -> dict:
    """Per language, the share of samples whose answer was read."""
    return {lang: value_summary(r["parsed"].get(lang, np.nan) for r in rows)["value"]
            for lang in langs}


@metric("consistency", better="higher",
        aggregation="mean over questions of the share of language pairs agreeing")
def consistency(rows: list[dict], langs: list[str]) -> dict:
    """CALM's consistency: the share of language pairs giving the same answer."""
    scores = [consistency_of(r["answers"], r["gold"])[0] for r in rows]
    return {**value_summary(scores), "skipped": int(sum(np.isnan(c) for c in scores))}


@metric("consistent_correct", better="higher",
        aggregation="mean over questions of the share of language pairs agreeing on gold")
def consistent_correct(rows: list[dict], langs: list[str]) -> dict:
    """The share of language pairs agreeing on the gold answer."""
    return value_summary(consistency_of(r["answers"], r["gold"])[1] for r in rows)


@metric("agreement", better=None,
        aggregation="per language pair: share of questions both answer alike")
def agreement(rows: list[dict], langs: list[str]) -> dict:
    """Per pair of languages, the share of questions both answer the same."""
    return agreement_matrix(rows, langs)


STANDARD = ("accuracy", "extraction_rate", "consistency", "consistent_correct", "agreement",
            "krippendorff_alpha", "answer_entropy")
"""The metrics every evaluation computes (the report reads them)."""


def setting_metrics(rows: list[dict], extra: Sequence[str] = ()) -> dict:
    """The standard metrics of one setting from its per-question rows, plus ``extra``
    registered metrics by name."""
    langs = sorted({lang for r in rows for lang in r["answers"]})
    values: dict = {"n_questions": len(rows), "languages": langs}
    for name in dict.fromkeys([*STANDARD, *extra]):
        values[name] = metric_spec(name)(rows, langs)
    return values


def compute_metrics(samples: Iterable[Sample], extra: Sequence[str] = ()) -> dict[str, dict]:
    """Metrics per setting (``zero-shot``, ``rag``) of samples whose answers are extracted;
    ``extra`` names registered metrics computed besides the standard ones."""
    return {setting: setting_metrics(rows, extra)
            for setting, rows in per_question(samples).items()}
