"""The evaluation grid: split × phase cells (``heldout/after``), each scored per setting.

``evaluation_grid`` is what ``metrics.json`` holds; ``format_grid_table`` prints it for the
README and the terminal; ``consistency_change`` says whether alignment made a split's answers
more consistent across languages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from calm_rag.evaluation.cells import Cell
from calm_rag.evaluation.delta import retrieval_delta
from calm_rag.evaluation.metrics import bootstrap_ci, compute_metrics, consistency_of, per_question
from calm_rag.evaluation.tables import pct, with_ci
from calm_rag.records import Sample

NOT_EXTRACTED = "unextracted"  # Sample.extraction == "": the answers stage has not run
UNANSWERED = ("ambiguous", "none", NOT_EXTRACTED)


def split_phase(cell: str) -> tuple[str, str]:
    """``"heldout/after"`` → ``("heldout", "after")`` (:meth:`Cell.parse`)."""
    parsed = Cell.parse(cell)
    return parsed.split, parsed.phase


def extraction_methods(samples: Iterable[Sample]) -> dict[str, dict[str, float]]:
    """Per setting, the share of samples whose answer each method gave (most used first)."""
    counts: dict[str, Counter] = {}
    for s in samples:
        counts.setdefault(s.setting, Counter())[s.extraction or NOT_EXTRACTED] += 1
    return {setting: {method: n / sum(c.values()) for method, n in c.most_common()}
            for setting, c in counts.items()}


def consistency_by_question(samples: Iterable[Sample]) -> dict[str, dict[str, float | None]]:
    """Per setting, each question's consistency (None under two answering languages)."""
    return {setting: {r["question_id"]: _finite(consistency_of(r["answers"])[0]) for r in rows}
            for setting, rows in per_question(samples).items()}


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)  # JSON has no NaN


def evaluate_cell(samples: list[Sample], metrics: Sequence[str] = ()) -> dict:
    """Everything the report shows about one cell's samples (plus ``metrics`` by name)."""
    return {
        "n_samples": len(samples),
        "metrics": compute_metrics(samples, metrics),
        "extraction": extraction_methods(samples),
        "consistency_by_question": consistency_by_question(samples),
        "retrieval_delta": retrieval_delta(samples) or None,
    }


def evaluation_grid(cells: dict[str, list[Sample]], metrics: Sequence[str] = ()) -> dict:
    """Score each ``split/phase`` cell; JSON-serializable (it is ``metrics.json``).
    ``metrics``: registered metrics computed besides the standard ones."""
    for name in cells:
        split_phase(name)
    grid = {"cells": {name: evaluate_cell(list(samples), metrics)
                      for name, samples in cells.items()}}
    splits = dict.fromkeys(split_phase(name)[0] for name in cells)
    grid["consistency_change"] = {split: consistency_change(grid, split) for split in splits}
    return grid


def add_rankc(grid: dict, option_scores: list[dict] | None,
              cells: dict[str, list[Sample]] | None = None) -> dict:
    """``grid`` with RankC (Qi et al. 2023) in each cell's setting metrics where option scores
    were taken (``evaluation.option_scores``); unchanged without them.

    The scores must be those of the grid's samples. With ``cells`` (the samples per cell, as
    given to :func:`evaluation_grid`) every cell, and in it every sampled question and
    language, must be scored with the question's options; without, each row must name a
    cell, setting, question and language the grid has. A mismatch is an InputError.
    """
    from calm_rag.errors import InputError
    from calm_rag.evaluation.agreement import check_option_scores, rankc, scores_by_cell

    if not option_scores:
        return grid
    by_cell: dict[str, list[dict]] = {}
    for row in option_scores:
        by_cell.setdefault(row["cell"], []).append(row)
    unknown = [name for name in by_cell if name not in grid["cells"]]
    unscored = [name for name in cells or {} if name not in by_cell]
    if unknown or unscored:
        raise InputError(f"option scores name the cells {', '.join(by_cell)} but the grid has "
                         f"{', '.join(grid['cells'])}", field="option_scores",
                         hint="score every evaluation cell, and only those")
    for name, rows in by_cell.items():
        targets = _score_targets(grid["cells"][name], cells[name] if cells else None)
        checked = check_option_scores([(None, row) for row in rows], targets,
                                      f"option scores of cell {name}", complete=bool(cells))
        for setting, scores in scores_by_cell(checked)[name].items():
            metrics = grid["cells"][name]["metrics"][setting]
            metrics["rankc"] = rankc(scores, metrics["languages"])
    return grid


def _score_targets(cell: dict, samples: list[Sample] | None) -> dict:
    """What a cell's option scores may name: its samples' (setting, question, language) with
    the options, or, without the samples, every pairing of the grid's questions and languages
    per setting (options unknown)."""
    from calm_rag.evaluation.agreement import score_targets

    if samples is not None:
        return score_targets(samples)
    return {(setting, qid, lang): None for setting, m in cell["metrics"].items()
            for qid in cell["consistency_by_question"][setting] for lang in m["languages"]}


def consistency_change(grid: dict, split: str, before: str = "before",
                       after: str = "after") -> dict[str, dict]:
    """Per setting, consistency before and after alignment and the paired change.

    The change is the mean over questions answered in two or more languages in both phases of
    (after − before), with a bootstrap interval; ``{}`` when the split lacks a phase.
    """
    cells = grid["cells"]
    first, last = cells.get(f"{split}/{before}"), cells.get(f"{split}/{after}")
    if first is None or last is None:
        return {}
    changes = {}
    for setting in first["metrics"]:
        if setting not in last["metrics"]:
            continue
        old = first["consistency_by_question"][setting]
        new = last["consistency_by_question"][setting]
        paired = [new[q] - old[q] for q in old
                  if old[q] is not None and new.get(q) is not None]
        diffs = np.asarray(paired, dtype=float)
        changes[setting] = {
            before: first["metrics"][setting]["consistency"],
            after: last["metrics"][setting]["consistency"],
            "change": {"value": float(diffs.mean()) if len(diffs) else None,
                       "ci95": [_finite(x) for x in bootstrap_ci(diffs)], "n": len(diffs)},
        }
    return changes


def grid_languages(grid: dict) -> list[str]:
    """The languages of all cells, in order of first appearance."""
    langs = (lang for cell in grid["cells"].values() for m in cell["metrics"].values()
             for lang in m["languages"])
    return list(dict.fromkeys(langs))


def answered_share(methods: dict[str, float]) -> float:
    """Share of samples with an answer, by any method."""
    return sum(share for method, share in methods.items() if method not in UNANSWERED)


FALLBACK_LIMIT = 0.20
"""Above this share of a cell's answers from the log-prob fallback, the report warns: the
figures then measure the letters' probabilities more than the answers the model wrote."""


def fallback_warnings(grid: dict, limit: float = FALLBACK_LIMIT) -> list[str]:
    """One line per cell and setting whose log-prob fallback gave more than ``limit`` of the
    answered samples' answers."""
    lines = []
    for name, cell in grid["cells"].items():
        for setting, methods in cell["extraction"].items():
            answered = answered_share(methods)
            share = methods.get("logprob", 0.0) / answered if answered else 0.0
            if share > limit:
                lines.append(f"{name} {setting}: the log-prob fallback gave {pct(share)}% of "
                             f"the answers (over {pct(limit)}%): these were not read "
                             "from the text (sampling.forced_answer: true reads them on vLLM)")
    return lines


def format_grid_table(grid: dict) -> str:
    """One markdown row per cell and setting: accuracy per language, consistency [95% CI],
    consistent-and-correct, and the share of samples answered (of which by log-prob), in %."""
    langs = grid_languages(grid)
    header = (["cell", "setting"] + [f"acc {lang}" for lang in langs]
              + ["consistency [95% CI]", "consistent & correct", "answered (log-prob)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, cell in grid["cells"].items():
        for setting, m in cell["metrics"].items():
            methods = cell["extraction"].get(setting, {})
            accuracy = [pct(m["accuracy"][lang]["value"]) if lang in m["accuracy"] else "–"
                        for lang in langs]
            row = ([name, setting] + accuracy
                   + [with_ci(m["consistency"]), pct(m["consistent_correct"]["value"]),
                      f"{pct(answered_share(methods))} ({pct(methods.get('logprob', 0.0))})"])
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- language sets

VOTE_KEYS = ("questions_voted", "targets", "ties", "ties_dropped", "abstained", "pairs")


def language_set_summary(langs: Sequence[str], held: Sequence[str], grid: dict,
                         votes: dict | None, folder: str) -> dict:
    """What the grid report compares of one language set's run: per cell and setting the
    mean accuracy over the trained languages, each held-out language's accuracy, consistency,
    RankC and alpha; the vote's counts. ``grid_cells`` carries the run's cells whole."""
    trained = [lang for lang in langs if lang not in held]
    cells: dict[str, dict] = {}
    for name, cell in grid["cells"].items():
        for setting, m in cell["metrics"].items():
            accuracy = {lang: m["accuracy"][lang]["value"] for lang in m["accuracy"]}
            values = [accuracy[x] for x in trained if accuracy.get(x) is not None]
            rankc = m.get("rankc")
            cells.setdefault(name, {})[setting] = {
                "accuracy": float(np.mean(values)) if values else None,
                "accuracy_heldout_languages": {x: accuracy.get(x) for x in held},
                "consistency": m["consistency"],
                "rankc": {k: rankc[k] for k in ("value", "ci95", "n")} if rankc else None,
                "krippendorff_alpha": m.get("krippendorff_alpha"),
            }
    return {"languages": list(langs), "heldout_languages": list(held), "folder": folder,
            "votes": {k: votes[k] for k in VOTE_KEYS} if votes else None, "cells": cells,
            "grid_cells": grid["cells"]}


def format_language_sets(name: str, sets: dict[str, dict], runs: dict[str, str]) -> str:
    """The grid report: the vote per set (how many questions tied), then every cell's
    accuracy and consistency per set."""
    from calm_rag.evaluation.tables import with_ci_number

    def table(header: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])

    votes = [[f"[{key}]({runs[key]}/report.md)", str(len(s["languages"]))]
             + [str(s["votes"][k]) if s["votes"] else "–" for k in VOTE_KEYS]
             for key, s in sets.items()]
    held = list(dict.fromkeys(x for s in sets.values() for x in s["heldout_languages"]))
    rows = [[key, cell, setting, pct(c["accuracy"]),
             *[pct(c["accuracy_heldout_languages"].get(x)) for x in held],
             with_ci(c["consistency"]), with_ci_number(c["rankc"]),
             with_ci_number(c["krippendorff_alpha"])]
            for key, s in sets.items() for cell, by_setting in s["cells"].items()
            for setting, c in by_setting.items()]
    header = (["set", "cell", "setting", "accuracy % (trained languages)"]
              + [f"accuracy % {x} (held out)" for x in held]
              + ["consistency % [95% CI]", "RankC [95% CI]", "Krippendorff's alpha"])
    note = ("Each set is the experiment run with those languages (held-out languages added, "
            "evaluated but never trained on); samples are cached per language, so sets share "
            "them. Ties: questions whose cross-lingual vote tied (settled or dropped), per "
            "setting, in the last round.")
    return "\n\n".join([
        f"# calm_rag language sets: {name}", note,
        "## Vote per set\n\n" + table(["set", "languages", *VOTE_KEYS], votes),
        "## Evaluation per set\n\n" + table(header, rows)])


# ---------------------------------------------------------------------------- align methods

def method_summary(langs: Sequence[str], held: Sequence[str], grid: dict, votes: dict | None,
                   folder: str, training: dict | None, recomputed: dict[str, int]) -> dict:
    """What the grid report compares of one align method's run: a language set's summary
    (:func:`language_set_summary`) plus the paired consistency change per split and setting,
    how many questions had CALM pairs, what the method trained on, and which stages the run
    computed rather than read from the cache."""
    summary = language_set_summary(langs, held, grid, votes, folder)
    if votes is not None and summary["votes"] is not None:
        summary["votes"]["questions_paired"] = votes.get("questions_paired")
    return summary | {"consistency_change": grid.get("consistency_change", {}),
                      "training": training, "recomputed": recomputed}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _count(value: Any) -> str:
    return "–" if value is None else str(value)


def format_methods(name: str, methods: dict[str, dict], runs: dict[str, str]) -> str:
    """The grid report of ``align.methods``: the vote and what each method trained on, every
    cell's accuracy, consistency, RankC and alpha per method, the paired consistency change."""
    from calm_rag.evaluation.tables import with_ci_number

    keys = (*VOTE_KEYS, "questions_paired")
    votes = [[f"[{m}]({runs[m]}/report.md)"]
             + [_count(s["votes"].get(k)) if s["votes"] else "–" for k in keys]
             + _training_cells(s["training"])
             + [", ".join(f"{k} {n}" for k, n in s["recomputed"].items()) or "none"]
             for m, s in methods.items()]
    held = list(dict.fromkeys(x for s in methods.values() for x in s["heldout_languages"]))
    rows = [[m, cell, setting, pct(c["accuracy"]),
             *[pct(c["accuracy_heldout_languages"].get(x)) for x in held],
             with_ci(c["consistency"]), with_ci_number(c["rankc"]),
             with_ci_number(c["krippendorff_alpha"])]
            for m, s in methods.items() for cell, by_setting in s["cells"].items()
            for setting, c in by_setting.items()]
    header = (["method", "cell", "setting", "accuracy % (trained languages)"]
              + [f"accuracy % {x} (held out)" for x in held]
              + ["consistency % [95% CI]", "RankC [95% CI]", "Krippendorff's alpha [95% CI]"])
    changes = [[m, split, setting, pct(c["before"]["value"]), pct(c["after"]["value"]),
                _change(c["change"])]
               for m, s in methods.items() for split, by_setting in s["consistency_change"].items()
               for setting, c in by_setting.items()]
    note = ("Each method is the experiment run with align.method set to it; the runs share "
            "the samples, answers and option scores through the stage cache, so every method "
            "trains on the same votes and its 'before' cells are the same samples. Ties: "
            "questions whose cross-lingual vote tied (settled or dropped), last round. "
            "Questions paired: questions with a CALM preference pair (what dpo trains on). "
            "Rows: the method's training rows (after max_length); questions trained: the "
            "questions they came from, where the method records them (dco does); steps: "
            "optimiser steps (align.trainer.max_steps may stop before the rows run out). "
            "Computed: the stages "
            "this run computed rather than read from the cache.")
    return "\n\n".join([
        f"# calm_rag align methods: {name}", note,
        "## Vote and training per method\n\n" + _table(
            ["method", *keys, "rows", "questions trained", "steps", "training s", "computed"],
            votes),
        "## Evaluation per method\n\n" + _table(header, rows),
        "## Consistency change per method (paired over questions)\n\n" + _table(
            ["method", "split", "setting", "before %", "after %",
             "change (points) [95% CI] (questions)"], changes)])


def _training_cells(training: dict | None) -> list[str]:
    if training is None:
        return ["–", "–", "–", "–"]
    return [_count(training["rows"]), _count(training["questions"]), _count(training["steps"]),
            f"{training['seconds']:.1f}"]


def _change(change: dict) -> str:
    """A paired change in points with its interval and the questions it pairs."""
    value, (low, high) = change["value"], change["ci95"]
    if value is None:
        return f"n/a ({change['n']})"
    points = f"{100 * value:+.1f}"
    if low is None:
        return f"{points} ({change['n']})"
    return f"{points} [{100 * low:+.1f}, {100 * high:+.1f}] ({change['n']})"
