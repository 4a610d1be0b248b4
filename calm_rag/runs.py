"""Finished run folders read back as library records: ``open_run("demo").eval_cells()``.

A run folder is what ``calm-rag run`` writes (``<runs_dir>/<name>/<timestamp>/``, the newest
named in ``<runs_dir>/<name>/LATEST``); see :mod:`calm_rag.pipeline.run_folder` for its files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from calm_rag.datasets.samples import read_samples
from calm_rag.errors import InputError
from calm_rag.evaluation.cells import Cell
from calm_rag.io import expect, read_json_object, read_jsonl, read_text
from calm_rag.records import PreferencePair, Sample, Vote

if TYPE_CHECKING:
    import pandas as pd

    from calm_rag.experiment import Experiment
    from calm_rag.explore import ExplorerView

HINT = "make one with: calm-rag run pipelines/demo.yaml"
Record = TypeVar("Record")


def latest_run(name: str, runs_dir: str | Path = "runs") -> Path:
    """The newest run folder of experiment ``name``, as named by its ``LATEST`` file."""
    latest = Path(runs_dir) / name / "LATEST"
    if not latest.is_file():
        raise InputError(f"no finished run of experiment {name!r}", path=latest, hint=HINT)
    stamp = read_text(latest).strip()
    if not stamp or "/" in stamp or "\\" in stamp or stamp.startswith("."):
        raise InputError(f"LATEST names {stamp!r}, not a run folder of this experiment",
                         path=latest, hint=HINT)
    folder = latest.parent / stamp
    if not folder.is_dir():
        raise InputError(f"LATEST names {folder.name!r}, which is missing", path=latest,
                         hint=HINT)
    return folder


def open_run(path_or_name: str | Path, runs_dir: str | Path = "runs") -> RunFolder:
    """A run folder by its path, or the newest run of an experiment by name (or by folder)."""
    path = Path(path_or_name)
    if (path / "manifest.json").is_file():
        return RunFolder(path)
    if (path / "LATEST").is_file():
        return RunFolder(latest_run(path.name, path.parent))
    if len(path.parts) == 1:  # a bare name: an experiment in runs_dir
        return RunFolder(latest_run(path.name, runs_dir))
    raise InputError("not a run folder (no manifest.json) nor an experiment's folder "
                     "(no LATEST)", path=path, hint=HINT)


class RunFolder:
    """One finished run; each accessor reads its file when called."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise InputError("not a run folder (no manifest.json)", path=self.path, hint=HINT)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The experiment's name (the folder above the timestamp)."""
        return self.path.parent.name

    @property
    def config(self) -> Experiment:
        """The resolved experiment the run was made with (``config.yaml``)."""
        from calm_rag.experiment import load_experiment

        return load_experiment(self.path / "config.yaml")

    @property
    def manifest(self) -> dict[str, Any]:
        """Seeds, package versions, git commit, question ids, models and stage keys."""
        return read_json_object(self.path / "manifest.json")

    @property
    def grid(self) -> dict[str, Any]:
        """The evaluation grid (``metrics.json``), as ``calm_rag.evaluation`` reads it."""
        return read_json_object(self.path / "metrics.json")

    def round_dir(self, number: int | None = None) -> Path:
        """Where round ``number``'s samples, votes and pairs are (default: the last round)."""
        if number is None:
            return self.path
        if (earlier := self.path / f"round-{number}").is_dir():
            return earlier
        last = len(list(self.path.glob("round-*"))) + 1  # the last round is at the top level
        if number == last:
            return self.path
        raise InputError(f"no round {number}: this run has rounds 1 to {last}", path=self.path)

    def samples(self, round: int | None = None) -> list[Sample]:
        """The alignment samples of a round (default: the last)."""
        return read_samples(self.round_dir(round) / "samples.jsonl")

    def votes(self, round: int | None = None) -> list[Vote]:
        """The cross-lingual votes of a round (default: the last)."""
        return _records(self.round_dir(round) / "votes.jsonl", Vote.from_dict)

    def pairs(self, round: int | None = None) -> list[PreferencePair]:
        """The preference pairs of a round (default: the last); none if every vote agreed."""
        return _records(self.round_dir(round) / "pairs.jsonl", PreferencePair.from_dict)

    def eval_cells(self) -> dict[str, list[Sample]]:
        """Evaluation samples per cell (``"heldout/after"``), both settings, in the grid's order."""
        return {cell: read_samples(self.path / "eval" / f"{Cell.parse(cell).file_stem}.jsonl")
                for cell in expect(self.grid, "cells", dict, self.path / "metrics.json")}

    def eval_frame(self) -> pd.DataFrame:
        """All evaluation samples as one :func:`samples_frame`, with ``split`` and ``phase``."""
        import pandas as pd

        frames = [samples_frame(samples).assign(split=Cell.parse(cell).split,
                                                phase=Cell.parse(cell).phase)
                  for cell, samples in self.eval_cells().items()]
        frame = (pd.concat(frames, ignore_index=True) if frames
                 else samples_frame([]).assign(split=None, phase=None))
        return frame[["split", "phase", *COLUMNS]]

    def metrics_frame(self) -> pd.DataFrame:
        """``metrics.json`` in long form: one row a figure, with columns ``cell, setting,
        metric, lang, value, lo, hi, n`` (``lang`` missing for a figure over all languages,
        ``"en/fr"`` for a pair's; ``lo``/``hi`` the 95% interval and ``n`` where recorded)."""
        import pandas as pd

        frame = pd.DataFrame(metric_rows(self.grid, self.path / "metrics.json"),
                             columns=METRIC_COLUMNS)
        return frame.astype({"n": "Int64"})  # a count, missing where none was recorded

    def explore(self, height: int = 720) -> ExplorerView:
        """The run's explorer, displayed inline in a notebook: the page ``calm-rag explore``
        writes (nothing is written here)."""
        from calm_rag.explore import ExplorerView

        return ExplorerView(self.path, height)


METRIC_COLUMNS = ["cell", "setting", "metric", "lang", "value", "lo", "hi", "n"]
MetricRow = tuple[str, str, str, str | None, float, float | None, float | None, int | None]
# Facts about a setting's questions, not figures of a metric.
NOT_METRICS = {"n_questions", "languages"}


def metric_rows(grid: dict[str, Any], path: Path | None = None) -> list[MetricRow]:
    """Every figure of an evaluation grid (``metrics.json``) as a :data:`METRIC_COLUMNS` row,
    in the grid's order: a metric is one figure, one per language, or one per pair of
    languages, each a number or ``{"value", "ci95", "n"}``."""
    rows: list[MetricRow] = []
    for cell, data in expect(grid, "cells", dict, path).items():
        for setting, metrics in expect(data, "metrics", dict, path).items():
            for name, value in metrics.items():
                if name not in NOT_METRICS:
                    rows.extend((cell, setting, name, *figure)
                                for figure in _figures(value, None))
    return rows


def _figures(value: Any, lang: str | None, depth: int = 0
             ) -> list[tuple[str | None, float, float | None, float | None, int | None]]:
    """``(lang, value, lo, hi, n)`` for a figure, or for each language's (a mapping of
    languages, two levels deep for a pairwise table); anything else holds no figure."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(lang, float(value), None, None, None)]
    if not isinstance(value, dict):
        return []
    if "value" in value:
        if value["value"] is None:
            return []  # no figure (e.g. no question with two answers to compare)
        lo, hi = value.get("ci95") or (None, None)
        return [(lang, float(value["value"]), lo, hi, value.get("n"))]
    if depth > 1:
        return []
    return [figure for key, sub in value.items()
            for figure in _figures(sub, key if lang is None else f"{lang}/{key}", depth + 1)]


def _records(path: Path, parse: Callable[..., Record]) -> list[Record]:
    """One record per JSONL line; an empty file (a round with no pairs) holds none."""
    return [parse(obj, path=path, line=line)
            for line, obj in read_jsonl(path, allow_empty=True)]


COLUMNS = ["id", "question_id", "lang", "setting", "index", "answer", "gold", "correct",
           "extraction", "text"]


def samples_frame(samples: Iterable[Sample]) -> pd.DataFrame:
    """One row per sample; ``correct`` is None where the question has no gold answer."""
    import pandas as pd

    rows = [(s.id, s.question.id, s.lang, s.setting, s.index, s.answer, s.question.answer,
             None if s.question.answer is None else s.answer == s.question.answer,
             s.extraction, s.text) for s in samples]
    return pd.DataFrame(rows, columns=COLUMNS)
