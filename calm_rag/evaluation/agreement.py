"""Agreement across languages as the field measures it, beside CALM's pairwise consistency.

Each language answers a question with the majority of its own samples (as for consistency).
Krippendorff's alpha treats languages as raters of nominal labels: 1 is perfect agreement,
0 agreement at chance given how often each letter is used, so a model that answers ``A``
everywhere is not called consistent. Answer entropy is, per question, the entropy in bits of
the answers the languages give (0 when all agree; at most log2 of the number of languages).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.errors import InputError
from calm_rag.evaluation.metric_spec import metric
from calm_rag.evaluation.metrics import bootstrap_interval, value_summary
from calm_rag.records import Sample


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


@metric("krippendorff_alpha", better="higher",
        aggregation="over all questions at once, languages as raters (nominal)")
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


@metric("answer_entropy", better="lower",
        aggregation="mean over questions of the entropy (bits) of the languages' answers")
def answer_entropy(rows: list[dict], langs: list[str]) -> dict:
    """Mean over questions of the entropy (bits) of the languages' answers; lower is more
    consistent. ``max`` is log2 of the number of languages."""
    scores = [entropy_of(r["answers"]) for r in rows]
    return {**value_summary(scores), "skipped": int(sum(np.isnan(s) for s in scores)),
            "max": float(np.log2(len(langs))) if langs else None}


# ---------------------------------------------------------------------------- RankC
# Qi, Fernández and Bisazza (EMNLP 2023) compare, per question, the model's ranking of the
# candidates in two languages: the overlap of the top-j candidates at every depth j, weighted
# so that the top ranks count most (softmax of N, N-1, ..., 1). It needs every option's score,
# not only the answer, so it is computed from the evaluation's option log-probabilities.

RANKC_NEEDS = ("RankC needs option scores (the log-probability of every option per language); "
               "these samples have none: skipped")


def rank_weights(n: int) -> np.ndarray:
    """Weights of depths 1..n: the softmax of (n, n-1, ..., 1), so depth 1 weighs most."""
    order = np.arange(n, 0, -1, dtype=float)
    exp = np.exp(order - order.max())
    return exp / exp.sum()


def ranking(scores: dict[str, float]) -> list[str]:
    """Labels best first; equal scores keep the options' order."""
    return sorted(scores, key=lambda label: -scores[label])


def rank_consistency(first: dict[str, float], second: dict[str, float]) -> float:
    """RankC of one question in two languages: sum over depths j of w_j · |top-j ∩ top-j| / j.

    1 when both languages rank the options alike; NaN when they score different options.
    """
    if not first or set(first) != set(second):
        return float("nan")
    a, b = ranking(first), ranking(second)
    weights = rank_weights(len(a))
    overlap = [len(set(a[:j]) & set(b[:j])) / j for j in range(1, len(a) + 1)]
    return float(np.dot(weights, overlap))


def rankc_chance(n: int) -> float:
    """RankC of two independent uniform rankings of n options (the top-j sets then share
    j²/n options on average, so P@j = j/n)."""
    return float(np.dot(rank_weights(n), np.arange(1, n + 1) / n)) if n else float("nan")


def rankc(scores: dict[str, dict[str, dict[str, float]]], langs: list[str]) -> dict | None:
    """RankC per language pair and overall, each with a bootstrap interval over questions.

    ``scores``: question id → language → option label → log-probability. Overall is, per
    question, the mean over the pairs it has, then the mean over questions; ``chance`` is the
    value of unrelated rankings for the questions' option count. None without two languages.
    """
    from itertools import combinations

    pairs = list(combinations(langs, 2))
    if not pairs or not scores:
        return None
    questions = list(scores)
    table = np.full((len(questions), len(pairs)), np.nan)
    for i, qid in enumerate(questions):
        by_lang = scores[qid]
        for k, (a, b) in enumerate(pairs):
            if a in by_lang and b in by_lang:
                table[i, k] = rank_consistency(by_lang[a], by_lang[b])
    counts = Counter(len(next(iter(v.values()))) for v in scores.values() if v)
    per_question = [float(np.nanmean(row)) if (~np.isnan(row)).any() else float("nan")
                    for row in table]
    return {**value_summary(per_question),
            "chance": rankc_chance(counts.most_common(1)[0][0]) if counts else None,
            "pairs": {f"{a}-{b}": value_summary(table[:, k]) for k, (a, b) in enumerate(pairs)}}


def scores_by_cell(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """Rows of ``option_scores.jsonl`` as cell → setting → question id → language → option
    scores (what :func:`rankc` reads). Check them first (:func:`check_option_scores`): a
    repeated row here would replace the earlier one."""
    nested: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_question = nested.setdefault(row["cell"], {}).setdefault(row["setting"], {})
        by_question.setdefault(row["question_id"], {})[row["lang"]] = row["scores"]
    return nested


# ---------------------------------------------------------------------------- scores vs samples
# RankC is only as good as the pairing of its scores with the samples: scores of other
# questions, languages or options would give a plausible number about something else, and a
# subset of the questions would give one about a subset. Each mismatch is refused instead.

ScoreKey = tuple[str, str, str]
"""(setting, question id, language) of one scored prompt."""

_SCORES_HINT = "pass the option scores of these samples, e.g. their run's option_scores.jsonl"


def score_targets(samples: Iterable[Sample]) -> dict[ScoreKey, tuple[str, ...] | None]:
    """What option scores of ``samples`` must cover: each sampled (setting, question,
    language), with the question's option labels."""
    return {(s.setting, s.question.id, s.lang): s.question.labels for s in samples}


def check_option_scores(rows: Iterable[tuple[int | None, dict]],
                        targets: dict[ScoreKey, tuple[str, ...] | None],
                        path: str | Path | None, complete: bool = True) -> list[dict]:
    """Rows (with the line each was read on) checked against ``targets`` (labels None: not
    checked): each names a sampled setting, question and language (codes normalized as the
    samples' are), scores exactly that question's options, and comes once; with ``complete``,
    every target is scored. Returns the rows, language codes normalized; InputError else."""
    known = _Known(targets)
    seen: dict[ScoreKey, int | None] = {}
    checked = []
    for line, row in rows:
        where: dict[str, Any] = {"path": path, "line": line}
        key = known.key(row, where)
        if key in seen:
            before = f"line {seen[key]}" if seen[key] is not None else "another row"
            raise InputError(f"question {key[1]!r} in {key[2]} ({key[0]}) is scored twice (also "
                             f"{before})", field="question_id", hint="keep one row", **where)
        seen[key] = line
        known.check_labels(key, row["scores"], where)
        checked.append({**row, "lang": key[2]})
    if complete and (missing := [key for key in targets if key not in seen]):
        setting, qid, lang = missing[0]
        raise InputError(
            f"scores {len(seen)} of the {len(targets)} sampled (question, language) pairs; "
            f"{len(missing)} have none, e.g. question {qid!r} in {lang} ({setting}): RankC would "
            "rest on a subset", path=path,
            hint="score every sampled question in every language, or pass only the samples "
                 "that were scored")
    return checked


def _example(ids: set[str]) -> str:
    return f", e.g. {min(ids)!r}" if ids else ""


class _Known:
    """The settings, questions and languages of the targets, to say which one a row lacks."""

    def __init__(self, targets: dict[ScoreKey, tuple[str, ...] | None]) -> None:
        self.targets = targets
        self.settings = sorted({s for s, _, _ in targets})
        self.questions = {q for _, q, _ in targets}
        self.langs = sorted({lang for _, _, lang in targets})

    def key(self, row: dict, where: dict) -> ScoreKey:
        """The row's (setting, question id, language), each one the samples have."""
        lang = self.language(row["lang"], where)
        if row["setting"] not in self.settings:
            raise InputError(f"setting {row['setting']!r} is not among the samples' settings "
                             f"({', '.join(self.settings)})", field="setting",
                             hint=_SCORES_HINT, **where)
        qid = row["question_id"]
        if qid not in self.questions:
            raise InputError(f"question {qid!r} matches no sample question (the samples have "
                             f"{len(self.questions)}{_example(self.questions)})",
                             field="question_id", hint=_SCORES_HINT, **where)
        key = (row["setting"], qid, lang)
        if key not in self.targets:
            raise InputError(f"question {qid!r} was not sampled in {lang} ({row['setting']})",
                             field="question_id", hint=_SCORES_HINT, **where)
        return key

    def language(self, code: str, where: dict) -> str:
        """``code`` as the samples write it (``cn`` → ``zh``), if they have it."""
        from calm_rag.languages import normalize_code

        if code in self.langs:
            return code
        try:
            lang = normalize_code(code)
        except InputError:
            raise InputError(f"{code!r} is not a language code", field="lang",
                             hint=f"the samples' languages are {', '.join(self.langs)}",
                             **where) from None
        if lang not in self.langs:
            raise InputError(f"language {code!r} is not among the samples' languages "
                             f"({', '.join(self.langs)})", field="lang", hint=_SCORES_HINT,
                             **where)
        return lang

    def check_labels(self, key: ScoreKey, scores: dict[str, float], where: dict) -> None:
        labels = self.targets[key]
        if labels is not None and set(scores) != set(labels):
            raise InputError(
                f"scores options {','.join(scores) or 'none'} but question {key[1]!r} has "
                f"options {','.join(labels)}", field="scores",
                hint="score each of the question's options, by its label", **where)
