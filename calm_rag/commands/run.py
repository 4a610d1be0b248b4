"""``calm-rag run``: one experiment from pipelines/, every stage cached and resumable."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calm_rag.datasets.lineup import Alignment
    from calm_rag.experiment import DataConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run an experiment: sample, vote, align, evaluate, report",
        description="Run the CALM loop of an experiment file (pipelines/*.yaml) and write "
                    "runs/<name>/<timestamp>/ with report.md. Stages already computed for the "
                    "same inputs are read from the cache; a killed run resumes.")
    p.add_argument("experiment", type=Path, nargs="?", help="the experiment YAML")
    p.add_argument("--retrieval", dest="retrieval", action="store_true", default=None,
                   help="also run with retrieval (sets retrieval.enabled=true)")
    p.add_argument("--no-retrieval", dest="retrieval", action="store_false",
                   help="zero-shot only (sets retrieval.enabled=false)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key, e.g. --set retrieval.k=3 --set sampling.n=2")
    p.add_argument("--runs-dir", help="where runs and the cache go (sets runs_dir)")
    p.add_argument("--describe", action="store_true",
                   help="print every experiment key with its type, default and meaning, each "
                        "backend's options and the names every registry holds")
    p.add_argument("--check", action="store_true",
                   help="load every language's questions, check they line up and print the "
                        "counts and what was dropped; loads no model or index")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved experiment as YAML (inputs absolute from the "
                        "experiment file, outputs from the current folder) and stop: the "
                        "printed file runs the same from any folder")
    p.add_argument("--force", metavar="STAGE[,STAGE]", default="",
                   help="recompute these stages even when cached, replacing their cache "
                        "entries (retrieve, sample, answers, regenerate, align, "
                        "option_scores; all: every one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calm_rag.errors import InputError
    from calm_rag.experiment import describe, load_experiment

    if args.describe:
        print("\n".join([*describe(), "", *_describe_entry()]))
        return 0
    if args.experiment is None:
        raise InputError("which experiment?", hint="calm-rag run pipelines/demo.yaml")
    overrides = list(args.overrides)
    if args.retrieval is not None:
        overrides.append(f"retrieval.enabled={str(args.retrieval).lower()}")
    if args.runs_dir:  # quoted: a folder named 2024 or true stays a string
        overrides.append(f"runs_dir={json.dumps(str(args.runs_dir))}")
    experiment = load_experiment(args.experiment, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(experiment.resolved(), sort_keys=False, allow_unicode=True),
              end="")
        return 0
    if args.check:
        _check_index(experiment, args.experiment, overrides)
        return check(experiment)

    from calm_rag.evaluation import format_grid_table
    from calm_rag.pipeline import run_experiment

    result = run_experiment(experiment, progress=not args.quiet, source=args.experiment,
                            force=forced_stages(args.force))
    print(format_grid_table(result.grid))
    print(f"\nrun finished in {result.seconds:.0f} s: {result.folder}")
    print(f"report: {result.folder / 'report.md'}")
    return 0


def forced_stages(text: str) -> frozenset[str]:
    """``--force sample,align`` as stage names (``all``: every stage that can be forced)."""
    from calm_rag.pipeline.cache import FORCEABLE

    names = {name.strip() for name in text.split(",") if name.strip()}
    return frozenset(FORCEABLE) if "all" in names else frozenset(names)


def check(experiment: Any) -> int:
    """``--check``: the questions of every language, lined up, counted (with ``data.eval``,
    the training and the evaluation set each); nothing else loaded."""
    from calm_rag.pipeline.questions import split_questions

    started = time.perf_counter()
    data = experiment.data
    evaluated_data = data.eval_data()
    if evaluated_data is None:
        checked = _check_set(data, experiment.base_dir)
        needed = data.train + data.heldout
        print(f"split: train {data.train} + heldout {data.heldout} = {needed} of "
              f"{checked.parallel} (seed {data.seed})")
        split_questions(checked.questions, data)  # too few is an InputError, as in a run
    else:
        print("training set (data.source):")
        trained = _check_set(data, experiment.base_dir)
        print("evaluation set (data.eval):")
        evaluated = _check_set(evaluated_data, experiment.base_dir)
        langs = len(data.languages)
        print(f"split: train {data.train} of {trained.parallel} training questions, heldout "
              f"{data.heldout} of {evaluated.parallel} test questions, in {langs} languages "
              f"(seed {data.seed})")
        split_questions(trained.questions, data, evaluated.questions)  # as in a run
    print(f"data: {data.protocol()}")
    print(f"checked in {time.perf_counter() - started:.1f} s; no model or index was loaded")
    return 0


def _check_index(experiment: Any, path: Path, overrides: list[str]) -> None:
    """``--check`` with retrieval on: the index is built, or a spec the run builds it from
    exists (read from the disk, nothing loaded); else the error names ``retrieval.index``
    with its line (or its ``--set``)."""
    from calm_rag.config import read_yaml
    from calm_rag.errors import InputError
    from calm_rag.retrieval.catalog import SPEC_SUFFIXES, index_source
    from calm_rag.retrieval.spec import load_spec

    settings, key = experiment.retrieval, "retrieval.index"
    if not settings.enabled:
        return
    try:
        source = index_source(settings.index, settings.index_dir, experiment.base_dir)
    except InputError as err:
        for override in reversed(overrides):  # the last --set of the key wins
            if override.partition("=")[0].strip() in (key, "retrieval"):
                raise InputError(err.message, path=f"--set {override}", field=key,
                                 hint=err.hint) from None
        lines = read_yaml(path)[1]  # a default index: the line of its group, if any
        raise InputError(err.message, path=path, line=lines.get(key, lines.get("retrieval")),
                         field=key, hint=err.hint) from None
    if source.suffix in SPEC_SUFFIXES:  # the run builds from it: a broken spec fails now
        load_spec(source)
    print(f"retrieval.index {settings.index}: {source}")


def _check_set(data: DataConfig, base_dir: str) -> Alignment:
    """Print one set's source, pivot and per-language counts; return its alignment (a
    ``misaligned: stop`` set raises on its first misaligned row after the counts)."""
    from calm_rag.datasets.entry import DatasetEntry
    from calm_rag.pipeline.questions import check_questions
    from calm_rag.registries import QUESTION_SOURCES

    source = data.entry or QUESTION_SOURCES.get(data.source, field="data.source")
    about = getattr(source, "description", "") or (source.__doc__ or "").strip().split("\n")[0]
    print(f"data.source {data.source}: {about}")
    if isinstance(source, DatasetEntry) and source.layouts:
        print(f"pivot: {source.pivot(data, base_dir)} (the release's native "
              "language, found from its file names)")
    # Counted as under `drop` first, so that a stop still shows every language's count.
    checked = check_questions(dataclasses.replace(data, misaligned="drop"), base_dir)
    print("\n".join(checked.summary(dropping=data.misaligned == "drop")))
    if checked.dropped and data.misaligned == "stop":
        check_questions(data, base_dir)  # raises: the first misaligned row
    return checked


def _describe_entry() -> list[str]:
    from calm_rag.config import describe as describe_config
    from calm_rag.datasets.entry import DatasetEntry
    from calm_rag.registries import QUESTION_SOURCES

    known = [f"  {name}: {source.description or source.__doc__}"
             if isinstance(source, DatasetEntry) else f"  {name}: {(source.__doc__ or '').strip()}"
             for name, source in QUESTION_SOURCES.items()]
    return ["datasets (data.source):", *known, "",
            "data.entry: a dataset written in the experiment (the built-in ones are the same):",
            *describe_config(DatasetEntry, "data.entry.")]
