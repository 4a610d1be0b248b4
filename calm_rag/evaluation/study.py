"""The vote study: every vote policy on a sample set with gold labels, on all its languages
and on every subset of 2, 3, ... of them (averaged per size).

It measures what the vote is for: how often the target is the gold answer (target accuracy),
how many questions get a target (coverage), how many tie, how many pairs come out and how many
of them are clean (chosen right, rejected wrong). By language count it tests CALM's claim that
more languages make better targets, and how a two-language vote fares (DCO's critique).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np

from calm_rag.errors import InputError
from calm_rag.evaluation.tables import pct
from calm_rag.evaluation.votes import clean_pairs, target_accuracy, vote_counts
from calm_rag.records import Sample
from calm_rag.vote.voting import VoteConfig

FIRST = ("pooled", "language-balanced", "weighted", "dawid-skene")  # the table's order
COLUMNS = ("target_accuracy", "coverage", "ties", "pairs", "clean_pairs", "clean_share")


def study_policies(base: VoteConfig, weights: dict[str, float] | None = None
                   ) -> dict[str, VoteConfig]:
    """The configurations compared: each registered policy on ``base``'s tie, abstain and
    pair options; ``weighted`` only when ``weights`` are given (with none it is
    ``language-balanced``)."""
    from calm_rag.registries import VOTE_POLICIES
    from calm_rag.vote.voting import vote_policy

    policies = {}
    shipped = [name for name in FIRST if name in VOTE_POLICIES]
    for name in [*shipped, *(n for n in VOTE_POLICIES if n not in FIRST)]:
        reads_weights = vote_policy(name).reads_weights
        if reads_weights and not weights:
            continue
        policies[name] = replace(base, policy=name, options={"weights": dict(weights or {})}
                                 if reads_weights else None)
    return policies


def score_votes(samples: list[Sample], config: VoteConfig) -> dict:
    """One row of the study: the vote and pairs of ``samples`` under ``config``."""
    from calm_rag.vote.pairs import build_pairs
    from calm_rag.vote.voting import vote_all

    votes = vote_all(samples, config)
    pairs = build_pairs(samples, votes, config)
    counts = vote_counts(votes)
    clean = clean_pairs(pairs, {v.question_id: v.gold for v in votes})
    return {
        "target_accuracy": target_accuracy(votes),
        "coverage": counts["targets"] / counts["questions_voted"] if votes else None,
        "ties": counts["ties"],
        "pairs": len(pairs),
        "clean_pairs": clean,
        "clean_share": clean / len(pairs) if pairs else None,
    }


def _mean(rows: list[dict]) -> dict:
    out: dict = {"subsets": len(rows)}
    for column in COLUMNS:
        values = [r[column] for r in rows if r[column] is not None]
        out[column] = float(np.mean(values)) if values else None
    return out


def vote_study(samples: list[Sample], policies: dict[str, VoteConfig],
               min_languages: int = 2) -> dict:
    """Per policy, the row on all languages and, per subset size, the mean row over every
    subset of that many languages. JSON-ready."""
    if not any(s.question.answer for s in samples):
        raise InputError("the samples carry no gold answers, so targets cannot be scored",
                         field="SAMPLES", hint="study samples of a dataset with answers")
    langs = sorted({s.lang for s in samples})
    if min_languages > len(langs):  # else every row is skipped: an empty table, no reason
        held = f"{len(langs)} language{'s' if len(langs) != 1 else ''} ({', '.join(langs)})"
        raise InputError(f"asks for votes of {min_languages} languages or more, the samples "
                         f"hold {held}", field="--min-languages",
                         hint="study samples of more languages, or lower --min-languages")
    by_lang: dict[str, list[Sample]] = {lang: [] for lang in langs}
    for s in samples:
        by_lang[s.lang].append(s)
    sizes = range(min_languages, len(langs) + 1)
    result: dict = {"languages": langs, "questions": len({s.question.id for s in samples}),
                    "policies": {}}
    for name, config in policies.items():
        by_size = {}
        for size in sizes:
            rows = [score_votes([s for lang in subset for s in by_lang[lang]], config)
                    for subset in combinations(langs, size)]
            by_size[str(size)] = _mean(rows)
        every = by_size.get(str(len(langs))) or score_votes(samples, config)
        result["policies"][name] = {"config": {"policy": config.policy, "tie": config.tie,
                                               "weights": config.weights},
                                    "all": every, "by_size": by_size}
    return result


def _num(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.0f}" if float(value).is_integer()
                                        else f"{value:.1f}")


def format_study_table(study: dict) -> str:
    """Markdown: one row per policy on all languages, then per policy and language count."""
    header = ("| policy | languages | target accuracy % | coverage % | ties | pairs "
              "| clean pairs | clean % |\n|---|---|---|---|---|---|---|---|")
    lines = [header]
    every = len(study["languages"])
    for name, p in study["policies"].items():
        for size, row in p["by_size"].items():
            label = (f"all {every}" if int(size) == every
                     else f"{size} (mean of {row['subsets']})")
            lines.append(f"| {name} | {label} | {pct(row['target_accuracy'])} | "
                         f"{pct(row['coverage'])} | {_num(row['ties'])} | {_num(row['pairs'])}"
                         f" | {_num(row['clean_pairs'])} | {pct(row['clean_share'])} |")
    return "\n".join(lines)


def plot_study(study: dict, path: str | Path) -> Path:
    """Target accuracy, ties and clean-pair share against the number of voting languages."""
    from calm_rag.evaluation.plots import figure, save_figure

    fig = figure(9, 3.6)
    panels = fig.subplots(1, 3)
    questions = max(study["questions"], 1)
    for name, p in study["policies"].items():
        sizes = [int(k) for k in p["by_size"]]
        rows = [p["by_size"][str(k)] for k in sizes]
        curves = ([r["target_accuracy"] for r in rows], [r["ties"] / questions for r in rows],
                  [r["clean_share"] for r in rows])
        for ax, values in zip(panels, curves, strict=True):
            ax.plot(sizes, [np.nan if v is None else 100 * v for v in values], marker="o",
                    label=name)
    titles = ("Target accuracy %", "Questions tied %", "Clean pairs %")
    for ax, title in zip(panels, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("languages voting")
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    return save_figure(fig, path)
