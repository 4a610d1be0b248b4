"""The run folder ``<runs_dir>/<name>/<timestamp>/``, written whole or not at all.

It holds what a reader of the run needs without the cache: the resolved config, the manifest
(seeds, package versions, git commit, input hashes, stage keys), samples, votes, pairs, the
adapter and loss plot, the evaluation samples, metrics.json and report.md with its plots;
links.json (where the training's cache entries and tracker logs are, and where
``align.report_to``'s trackers keep the evaluation's figures: TensorBoard's in ``tensorboard/``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from calm_rag.datasets.samples import write_samples
from calm_rag.errors import InputError
from calm_rag.evaluation.cells import Cell
from calm_rag.io import atomic_write, write_json, write_jsonl
from calm_rag.io.run_names import check_run_name
from calm_rag.pipeline.model_ref import ModelRef
from calm_rag.pipeline.stages import Retrieved, Round, RunContext
from calm_rag.records import Question, Sample
from calm_rag.runtime.provenance import file_digest, git_state, package_versions
from calm_rag.training.common import TrainResult
from calm_rag.training.tracker_runs import rebased, relative

log = logging.getLogger(__name__)


def write_run(ctx: RunContext, splits: dict[str, list[Question]],
              cells: dict[Cell, list[Sample]], rounds: list[Round], base: ModelRef,
              final: ModelRef, source: str | Path | None,
              option_scores: list[dict[str, Any]] | None = None,
              retrieved: Retrieved | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the run folder; return it and the evaluation grid."""
    from calm_rag.evaluation import evaluation_grid, write_report
    from calm_rag.evaluation.grid import add_rankc
    from calm_rag.evaluation.trackers import TrackedRun
    from calm_rag.evaluation.tracking import describe, log_evaluation
    from calm_rag.evaluation.votes import vote_summary

    experiment = ctx.experiment
    parent = Path(experiment.runs_dir) / check_run_name(experiment.name, experiment.runs_dir)
    named = {str(cell): samples for cell, samples in cells.items()}  # metrics.json's keys
    grid = add_rankc(evaluation_grid(named, experiment.evaluation.metrics), option_scores,
                     named)
    with new_run_folder(parent) as (folder, published):
        with atomic_write(folder / "config.yaml") as handle:
            # Resolved: `calm-rag run RUN/config.yaml` reads the same inputs and cache
            # from any folder.
            yaml.safe_dump(experiment.resolved(), handle, sort_keys=False, allow_unicode=True)
        write_json(folder / "manifest.json",
                   manifest(ctx, splits, (base, final), source, folder))
        _write_rounds(folder, rounds)
        for cell, samples in cells.items():
            write_samples(folder / "eval" / f"{cell.file_stem}.jsonl", samples)
        write_json(folder / "metrics.json", grid)
        # The figures just written, to the tracker(s) the training logged to.
        tracked = log_evaluation(folder, grid, experiment.align.trackers,
                                 TrackedRun(experiment.name, experiment.align.trainer))
        if tracked or any(r.training for r in rounds):
            write_json(folder / "links.json",
                       training_links(folder, rounds) | {"evaluation": tracked})
        if option_scores:
            write_jsonl(folder / "option_scores.jsonl", option_scores)
        if retrieved is not None:  # every question's passages: id, language, rank, score
            write_jsonl(folder / "retrieved.jsonl", retrieved.rows())
        training = _training_summary(folder, rounds)
        last = rounds[-1] if rounds else None
        votes = (vote_summary(last.tally, last.pairs, experiment.vote)
                 if last else None)
        write_report(folder, grid, title=f"calm_rag run: {experiment.name}",
                     summary=_summary(experiment, splits, base, final, retrieved)
                     | _alignment_line(ctx), training=training, votes=votes,
                     recall=recall_by_language(experiment, retrieved),
                     recall_k=experiment.retrieval.k)
    target = published[0]
    point_latest(target)
    for tracker, where in tracked.items():
        log.info("evaluation metrics logged to %s: %s (links.json: evaluation)", tracker,
                 describe(where, target))
    log.info(reuse_line(ctx.stages))
    return target, grid


def reused(stages: list[dict[str, Any]]) -> list[str]:
    """``<stage> <label>`` of each stage read from the cache, and of each computed from a
    killed run's finished pieces (``resumed``: how many files it found)."""
    return ([f"{s['stage']} {s['label']}" for s in stages if s["cached"]]
            + [f"{s['stage']} {s['label']} (resumed from {s['resumed']} file(s) of a killed "
               "run)" for s in stages if s.get("resumed")])


def reuse_line(stages: list[dict[str, Any]]) -> str:
    """One log line: how many stages came from the cache, were resumed, were forced."""
    cached = sum(s["cached"] for s in stages)
    resumed = sum(bool(s.get("resumed")) for s in stages)
    forced = sum(bool(s.get("forced")) for s in stages)
    return (f"reused from the cache: {cached} of {len(stages)} stage(s); resumed from a "
            f"killed run: {resumed}; forced: {forced} (manifest.json: reused, stages)")


def training_links(folder: Path, rounds: list[Round]) -> dict[str, Any]:
    """Where each round's training lives in the stage cache (the run keeps a copy of the
    adapter only): its folder, adapter, merged model and tracker logs, relative to the run
    folder so that the runs folder can move with its cache; and its W&B, MLflow and Trackio
    runs as ``trackers.json`` recorded them (the evaluation entry's shape). A training with no
    TensorBoard events (cached from a run without ``report_to: tensorboard``) has no
    ``tensorboard``, one that logged to no other tracker no other tracker's key."""
    links = []
    for number, round_ in enumerate(rounds, start=1):
        training = round_.training
        if training is None:
            continue
        places = {"training": training.folder, "adapter": training.adapter_dir,
                  "merged_model": training.merged_dir,
                  "tensorboard": training.folder / "tensorboard"}
        links.append({"round": number} | {
            name: relative(place, folder)
            for name, place in places.items() if place is not None and Path(place).exists()}
            | {tracker: rebased(where, training.folder, folder)
               for tracker, where in training.trackers.items()})
    return {"rounds": links}


@contextmanager
def new_run_folder(parent: Path) -> Iterator[tuple[Path, list[Path]]]:
    """A staging folder, published under a fresh ``<timestamp>[-N]`` name when the block
    succeeds (the name is taken with an exclusive mkdir, so runs finishing in the same second
    get different folders and none is ever replaced); ``published`` then holds the folder.

    The staging folder's name carries this process's pid (:func:`owner_tag`): a run killed
    while writing leaves it behind, and the next run in ``parent`` sweeps it as soon as that
    process is gone, whatever its age."""
    from calm_rag.pipeline.cache import owner_tag, sweep_folder

    parent.mkdir(parents=True, exist_ok=True)
    sweep_folder(parent)  # staging folders of killed runs
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".run.{owner_tag()}.", suffix=".new"))
    published: list[Path] = []
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging, published
        published.append(_publish(staging, parent, time.strftime("%Y%m%d-%H%M%S")))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, parent: Path, stamp: str) -> Path:
    for attempt in range(1, 10_000):
        target = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            target.mkdir()  # exclusive: this name is ours now
        except FileExistsError:
            continue
        try:
            os.replace(staging, target)  # onto our own empty folder
        except BaseException:
            target.rmdir()
            raise
        return target
    raise InputError("too many runs with this timestamp", path=parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_rounds(folder: Path, rounds: list[Round]) -> None:
    """samples/votes/pairs of the last round at the top level, earlier rounds in round-N/."""
    for number, round_ in enumerate(rounds, start=1):
        where = folder if number == len(rounds) else folder / f"round-{number}"
        where.mkdir(exist_ok=True)
        write_samples(where / "samples.jsonl", round_.samples)
        write_jsonl(where / "votes.jsonl", (v.to_dict() for v in round_.votes))
        write_jsonl(where / "pairs.jsonl", (p.to_dict() for p in round_.pairs))
        if round_.regenerated is not None:  # regenerate's chosen texts, beside their pairs
            write_samples(where / "regenerated.jsonl", round_.regenerated)
        if round_.training:
            shutil.copytree(round_.training.adapter_dir, where / "adapter")
            shutil.copy2(round_.training.loss_plot, where / "loss.png")


def _training_summary(folder: Path, rounds: list[Round]) -> dict[str, Any] | None:
    trained = [r.training for r in rounds if r.training]
    if not trained:
        return None
    last = trained[-1]
    return {"method": last.method, "target": last.target, "rounds": len(trained),
            "rows": last.rows, "final_loss": last.final_loss,
            "seconds": sum(t.seconds for t in trained),
            "loss_plot": "loss.png", **_trained_model(last)}


def _trained_model(training: TrainResult) -> dict[str, str]:
    """Where the trained weights are: the merged model (``align.merge``), else the adapter
    (in the cache; the run folder has its copy)."""
    if training.merged_dir is not None:
        return {"merged_model": _local(training.merged_dir)}
    return {"adapter": _local(training.adapter_dir)}


def _local(path: str | Path) -> str:
    """A local path absolute (the report shows it relative to the run folder, whatever the
    folder the run was started in); a hub id or a model's short name as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _summary(experiment: Any, splits: dict[str, list[Question]], base: ModelRef,
             final: ModelRef, retrieved: Retrieved | None = None) -> dict[str, str]:
    """The report's header; ``retrieved`` adds recall@k where the questions have relevance
    labels for the index searched."""
    data = experiment.data
    counts = ", ".join(f"{len({q.id for q in qs})} {name}" for name, qs in splits.items())
    held = experiment.evaluation.heldout_languages
    return {
        "experiment": experiment.name,
        "generator": f"{experiment.generator.model} ({experiment.generator.backend})",
        "data": f"{data.source} {data.input_name}: "
                f"{counts} questions x {len(data.languages)} languages "
                f"({', '.join(data.languages)})"
                + (f"; held out of the vote and of training, evaluated only: {', '.join(held)}"
                   if held else ""),
        "protocol": data.protocol(),
        "settings": ", ".join(experiment.settings)
                    + (f" ({retrieval_line(experiment.retrieval)})"
                       if experiment.retrieval.enabled else ""),
        "sampling": _params(experiment.sampling),
        "evaluation": _params(experiment.evaluation.sampling),
        "alignment": f"{experiment.align.method}, target {experiment.align.target}, "
                     f"{experiment.align.rounds} round(s)",
        "aligned model": _model_line(final) if final != base else "(not aligned)",
    } | recall_line(experiment, retrieved)


def retrieval_line(retrieval: Any) -> str:
    """Index, k, policy, reranker, and the corpus searched: its description, size and
    languages from the index manifest, and whether it is a demo corpus (its spec says so)."""
    line = f"index {retrieval.index}, k={retrieval.k}, {retrieval.policy}"
    if retrieval.rerank.enabled:
        line += f", reranked by {retrieval.rerank.model} (top {retrieval.rerank.top_n})"
    return f"{line}; {_corpus_line(retrieval)}"


def _corpus_line(retrieval: Any) -> str:
    from calm_rag.retrieval.catalog import locate_index
    from calm_rag.retrieval.manifest import read_manifest

    try:
        manifest = read_manifest(locate_index(retrieval.index, retrieval.index_dir))
    except (InputError, OSError) as err:  # gone since the run retrieved: say so, not guess
        return f"corpus unknown (index manifest unreadable: {err})"
    languages = manifest.get("languages") or {}
    shares = ", ".join(f"{lang} {count:,}" for lang, count in languages.items())
    description = manifest.get("description") or manifest["name"]
    line = (f"corpus: {description}, {manifest['chunks']['count']:,} chunks in "
            f"{len(languages)} language(s) ({shares})")
    if re.search(r"\bdemo\b", description, re.IGNORECASE):
        line += "; a DEMO corpus, not a real retrieval setting"
    return line


def recall_line(experiment: Any, retrieved: Retrieved | None) -> dict[str, str]:
    """``retrieval recall@k``: the share of (question, language) whose hits hold a relevant
    document, overall and per language; nothing when there are no labels for this index."""
    per_lang = recall_by_language(experiment, retrieved)
    if not per_lang:
        return {}
    found, asked = (sum(counts[i] for counts in per_lang.values()) for i in (0, 1))
    if not asked:
        return {}
    shares = ", ".join(f"{lang} {f / n:.2f} ({f}/{n})" for lang, (f, n) in per_lang.items())
    return {f"retrieval recall@{experiment.retrieval.k}":
            f"{found / asked:.2f} ({found}/{asked} question-languages with a relevant passage "
            f"among their hits); {shares}"}


def recall_by_language(experiment: Any, retrieved: Retrieved | None
                       ) -> dict[str, tuple[int, int]] | None:
    """Per query language ``(found, asked)`` (:meth:`Retrieved.recall`); None when there are
    no relevance labels for the index searched."""
    from calm_rag.pipeline.stages.retrieve import relevance_labels

    qrels = relevance_labels(experiment) if retrieved is not None else None
    if retrieved is None or not qrels:
        return None
    return retrieved.recall(qrels)


def _model_line(model: ModelRef) -> str:
    """The model as sampled: a folder, or a base with the adapter applied on top of it."""
    path = _local(model.path)
    return f"{path} + adapter {_local(model.adapter)}" if model.adapter else path


def _alignment(ctx: RunContext) -> dict[str, Any] | None:
    """Rows read per language, questions lining up, and what ``data.misaligned: drop`` left out."""
    checked = ctx.alignment
    if checked is None:
        return None
    return {"rows": {lang: {"from": where, "rows": n} for lang, (where, n) in checked.rows.items()},
            "parallel": checked.parallel, "unmatched": checked.unmatched,
            "dropped": [dataclasses.asdict(drop) for drop in checked.dropped]}


def _alignment_line(ctx: RunContext) -> dict[str, str]:
    checked = ctx.alignment
    if checked is None or not checked.dropped:
        return {}
    dropped = "; ".join(d.describe() for d in checked.dropped)
    return {"misaligned rows dropped": f"{dropped}; {checked.parallel} questions line up"}


def _params(params: Any) -> str:
    return (f"n={params.n}, temperature {params.temperature}, top_p {params.top_p}, "
            f"max_tokens {params.max_tokens}, seed {params.seed}")


def manifest(ctx: RunContext, splits: dict[str, list[Question]],
             models: tuple[ModelRef, ModelRef], source: str | Path | None, folder: Path
             ) -> dict[str, Any]:
    """Everything needed to say what this run was: seeds, versions, commit, input hashes.
    ``models``: the base and the final model; ``folder``: the run folder being written."""
    experiment = ctx.experiment
    base, final = models
    return {
        "experiment": experiment.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_file": str(source) if source else None,
        "config_sha256": file_digest(source, remember=False) if source else None,
        "seeds": {"data": experiment.data.seed, "sampling": experiment.sampling.seed,
                  "evaluation": experiment.evaluation.sampling.seed,
                  "align": experiment.align.seed},
        "questions": {name: sorted({q.id for q in qs}) for name, qs in splits.items()},
        "alignment": _alignment(ctx),
        "models": model_places(experiment.generator.model, base, final, folder),
        "stages": ctx.stages,
        "reused": reused(ctx.stages),
        "precision": precision(experiment),
        "packages": package_versions(),
        "python": platform.python_version(),
        "git": git_state(),
        "paths": run_paths(experiment, source) | {
            "base_model": machine_path(base.path),
            "final_model": machine_path(final.adapter or final.path)},
    }


def model_places(named: str, base: ModelRef, final: ModelRef, folder: Path) -> dict[str, str]:
    """The base as the experiment names it and the final model (the aligned copy or adapter)
    relative to the run folder, as links.json has them; their fingerprints. The machine's
    paths of both are under the manifest's "paths"."""
    place = final.adapter or final.path
    aligned = place != base.path or final.fingerprint != base.fingerprint
    return {"base": named, "base_fingerprint": base.fingerprint,
            "final": relative(place, folder) if aligned else named,
            "final_fingerprint": final.fingerprint}


def machine_path(place: str) -> str:
    """A local model's absolute path; a hub id or a served model's name as it is."""
    return os.path.abspath(place) if Path(place).exists() else place


def run_paths(experiment: Any, source: str | Path | None) -> dict[str, str | None]:
    """The machine's absolute paths of the run (the only place the run folder keeps them):
    the experiment file, the folder its inputs are read from, and where outputs went."""
    return {"config_file": str(Path(source).resolve()) if source else None,
            "inputs_from": str(Path(experiment.base_dir).resolve()),
            "cwd": os.getcwd(),
            "runs_dir": os.path.abspath(experiment.runs_dir),
            "index_dir": os.path.abspath(experiment.retrieval.index_dir)}


def precision(experiment: Any) -> dict[str, str]:
    """What ``auto`` meant on this machine and why, and the dtypes the run used with it."""
    from calm_rag.runtime.hardware import auto_precision, resolve_dtype

    chosen = auto_precision()
    generator = experiment.generator
    dtype = generator.backend_class.dtype_of(generator.options)  # none for a served model
    training = experiment.align.precision
    return chosen.to_dict() | {
        "generator": resolve_dtype(dtype) if dtype else "as served",
        "scoring": chosen.dtype,
        "training": ("bf16" if chosen.bf16 else "fp32") if training == "auto" else training,
    }


def point_latest(target: Path) -> None:
    """``<runs_dir>/<name>/latest`` names the newest run (a text file: works everywhere)."""
    with atomic_write(target.parent / "LATEST") as handle:
        handle.write(target.name + "\n")
