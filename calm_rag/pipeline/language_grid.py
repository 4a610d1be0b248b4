"""An experiment over several sets of languages (``data.language_sets``), run as one grid.

Each set runs as the experiment with ``data.languages`` set to it (plus the held-out
languages, evaluated but never trained on), its samples cached per language so that a set
reuses every language another set already sampled with the same model. The grid's own folder
``<runs_dir>/<name>/<timestamp>/`` holds ``grid.json`` and ``report.md`` comparing the sets:
accuracy, CALM's consistency, RankC and how many questions the vote tied.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calm_rag.experiment import Experiment
from calm_rag.pipeline.run import RunResult, run_experiment

log = logging.getLogger(__name__)


def set_experiment(experiment: Experiment, langs: tuple[str, ...]) -> Experiment:
    """The experiment of one language set: its own run name, its languages and the held-out
    ones, sampled per language."""
    held = experiment.evaluation.heldout_languages
    data = dataclasses.replace(experiment.data, language_sets=(), sample_per_language=True,
                               languages=langs + tuple(x for x in held if x not in langs))
    return dataclasses.replace(experiment, data=data, name=set_name(experiment.name, langs))


def set_name(name: str, langs: tuple[str, ...]) -> str:
    return f"{name}-{'-'.join(langs)}"


def run_language_grid(experiment: Experiment, *, progress: bool = True,
                      source: str | Path | None = None,
                      force: frozenset[str] = frozenset()) -> RunResult:
    """Run every language set of ``experiment``; write the grid folder and return it."""
    from calm_rag.evaluation.grid import language_set_summary

    started = time.perf_counter()
    sets = experiment.data.language_sets
    summaries, results = {}, []
    for i, langs in enumerate(sets, start=1):
        log.info(f"language set {i} of {len(sets)}: {', '.join(langs)}")
        result = run_experiment(set_experiment(experiment, langs), progress=progress,
                                source=source, force=force)
        results.append(result)
        last = result.rounds[-1] if result.rounds else None
        votes = _votes(experiment, last) if last else None
        summaries["-".join(langs)] = language_set_summary(
            langs, experiment.evaluation.heldout_languages, result.grid, votes,
            str(result.folder))
    folder, grid = write_grid(experiment, summaries)
    stages = [stage for result in results for stage in result.stages]
    return RunResult(folder=folder, grid=grid, rounds=[], stages=stages,
                     seconds=time.perf_counter() - started)


def _votes(experiment: Experiment, last: Any) -> dict:
    from calm_rag.evaluation.votes import vote_summary

    return vote_summary(last.tally, last.pairs, experiment.vote)


def write_grid(experiment: Experiment, summaries: dict[str, dict], key: str = "language_sets",
               formatter: Callable[[str, dict[str, dict], dict[str, str]], str] | None = None
               ) -> tuple[Path, dict]:
    """``grid.json`` (the summaries under ``key``) and ``report.md`` (``formatter``'s, by
    default the language sets') in a new ``<runs_dir>/<name>/<timestamp>/``."""
    from calm_rag.evaluation.grid import format_language_sets
    from calm_rag.io import atomic_write, write_json
    from calm_rag.pipeline.run_folder import check_run_name, new_run_folder, point_latest

    formatter = formatter or format_language_sets
    parent = Path(experiment.runs_dir) / check_run_name(experiment.name, experiment.runs_dir)
    grid = {key: summaries,
            "cells": {f"{cell} [{name}]": data for name, s in summaries.items()
                      for cell, data in s.pop("grid_cells").items()}}
    with new_run_folder(parent) as (folder, published):
        write_json(folder / "grid.json", grid)
        # The grid's folder will be a sibling of the staging one: links start from there.
        runs = {name: "../" + Path(os.path.relpath(s["folder"], parent)).as_posix()
                for name, s in summaries.items()}
        with atomic_write(folder / "report.md") as handle:
            handle.write(formatter(experiment.name, summaries, runs) + "\n")
    point_latest(published[0])
    return published[0], grid
