"""An experiment over several align methods (``align.methods: [dpo, dco]``), run as one grid.

Each method runs as the experiment with ``align.method`` set to it, under its own run name
(``<name>-<method>``). Nothing but the align stage depends on the method, so the runs share
every sample, answer and option-score stage through the cache: the first run computes them,
the others read them back, and every method trains on the same votes and is evaluated on the
same "before" samples. The grid's own folder ``<runs_dir>/<name>/<timestamp>/`` holds
``grid.json`` and ``report.md`` comparing the methods: accuracy, CALM's consistency (with its
paired change), RankC and Krippendorff's alpha before and after, the vote (ties), and what
each method trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from calm_rag.experiment import Experiment
from calm_rag.io import read_json
from calm_rag.pipeline.language_grid import write_grid
from calm_rag.pipeline.run import RunResult, run_experiment

log = logging.getLogger(__name__)


def method_experiment(experiment: Experiment, method: str) -> Experiment:
    """The experiment of one method: its own run name, ``align.method`` set, no grid."""
    align = dataclasses.replace(experiment.align, method=method, methods=())
    return dataclasses.replace(experiment, align=align, name=method_name(experiment.name, method))


def method_name(name: str, method: str) -> str:
    return f"{name}-{method}"


def run_method_grid(experiment: Experiment, *, progress: bool = True,
                    source: str | Path | None = None,
                    force: frozenset[str] = frozenset()) -> RunResult:
    """Run the experiment once per method of ``align.methods``; write the grid folder and
    return it (its ``stages`` list every run's, cache hits included). ``force`` as in
    ``run_experiment``: each method's run recomputes the stages named."""
    from calm_rag.evaluation.grid import format_methods, method_summary

    started = time.perf_counter()
    methods = experiment.align.methods
    summaries, results = {}, []
    for i, method in enumerate(methods, start=1):
        log.info(f"align method {i} of {len(methods)}: {method}")
        result = run_experiment(method_experiment(experiment, method), progress=progress,
                                source=source, force=force)
        results.append(result)
        summaries[method] = method_summary(
            experiment.data.languages, experiment.evaluation.heldout_languages, result.grid,
            _votes(experiment, result), str(result.folder), _training(result),
            _recomputed(result))
    folder, grid = write_grid(experiment, summaries, key="methods", formatter=format_methods)
    stages = [stage for result in results for stage in result.stages]
    return RunResult(folder=folder, grid=grid, rounds=[], stages=stages,
                     seconds=time.perf_counter() - started)


def _votes(experiment: Experiment, result: RunResult) -> dict | None:
    """The last round's vote, as the run's report counts it (ties, pairs)."""
    from calm_rag.evaluation.votes import vote_summary

    if not result.rounds:
        return None
    last = result.rounds[-1]
    summary = vote_summary(last.tally, last.pairs, experiment.vote)
    paired = {(p.question_id, p.setting) for p in last.pairs}
    return summary | {"questions_paired": len(paired)}


def _training(result: RunResult) -> dict[str, Any] | None:
    """What the last round trained on: rows (after max_length), and, where the method wrote
    them beside its log, the rows built and the questions they came from."""
    from calm_rag.training.dco import ROWS_FILE

    training = result.rounds[-1].training if result.rounds else None
    if training is None:
        return None
    built = training.folder / ROWS_FILE
    rows = read_json(built) if built.is_file() else {}
    steps = training.log[-1]["step"] if training.log else 0
    return {"rows": training.rows, "steps": steps, "questions": rows.get("questions"),
            "skipped": rows.get("skipped"), "seconds": training.seconds,
            "final_loss": training.final_loss}


def _recomputed(result: RunResult) -> dict[str, int]:
    """Per stage, how many of the run's entries were computed rather than read back."""
    counts: dict[str, int] = {}
    for stage in result.stages:
        if not stage["cached"]:
            counts[stage["stage"]] = counts.get(stage["stage"], 0) + 1
    return counts
