"""The align stage: one round's training, cached in place so a killed training resumes."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.experiment import Experiment
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.model_ref import ModelRef
from calm_rag.pipeline.stages.context import RunContext
from calm_rag.pipeline.stages.sample import SampleJob  # noqa: F401
from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.registries import ALIGN_METHODS
from calm_rag.runtime.hardware import resolve_dtype
from calm_rag.training.common import TrainResult
from calm_rag.training.config import AlignConfig
from calm_rag.training.tracker_runs import run_name
from calm_rag.vote.voting import Tally

log = logging.getLogger(__name__)


@dataclass
class Round:
    """What one alignment round produced."""

    samples: list[Sample]
    tally: Tally
    """The votes, and the weight the vote policy gave each language (per setting)."""
    pairs: list[PreferencePair]
    training: TrainResult | None = None
    """The round's training, as :meth:`TrainResult.load` reads its cache folder (None when
    there was nothing to train on)."""
    regenerated: list[Sample] | None = None
    """``vote.chosen_fallback: regenerate``: the responses sampled again and kept (None under
    any other fallback)."""

    @property
    def votes(self) -> list[Vote]:
        return self.tally.votes


# Keys that change how a training runs, not what it trains: not in the align stage's key.
_RUN_ONLY = ("rounds", "launcher", "machine_rank", "main_process_ip", "main_process_port",
             "save_steps", "report_to")


def align_stage(ctx: RunContext, label: str, model: ModelRef, rows: list[Any]
                ) -> tuple[ModelRef, TrainResult]:
    """Train on ``rows`` (what the align method's ``rows`` gave: pairs for DPO, target samples
    for SFT), from ``model`` and its adapter if it has one; the trained model (base + adapter,
    or the merged model with ``align.merge``) and the training."""
    align = align_for_backend(ctx.experiment)
    precision = resolve_dtype("auto") if align.precision == "auto" else align.precision
    # Training renders each prompt as the sampler did (a model's thinking switch, say).
    template = dict(ctx.experiment.sampling.chat_template_kwargs)
    align = dataclasses.replace(align, chat_template_kwargs=template)

    def train(folder: Path) -> TrainResult:
        ctx.scorers.release()  # training loads its own copy of the model
        method = ALIGN_METHODS.get(align.method, field="align.method")
        return _in_folder(method.train(model.path, rows, align, folder, model.adapter),
                          folder, align.method)

    # Trained in place: its checkpoints stay where a resumed run finds them.
    stage = Stage("align", _written_by_training, TrainResult.load, in_place=True)
    key = stage.key(model.fingerprint,
                    align.to_dict() | dict.fromkeys(_RUN_ONLY) | {"precision": precision},
                    [r.to_dict() for r in rows],
                    *([template] if template else []))  # keys without them stay as they were
    result = run_cached(ctx, stage, label, key, train)
    line = (cached_tracking(label, result, align.trackers) if ctx.stages[-1]["cached"]
            else trained_tracking(label, result))
    if line:
        log.info(line)
    folder = result.folder
    if align.merge:
        return ModelRef(str(folder / "merged"), f"align:{key}"), result
    return ModelRef(model.path, f"align:{key}", adapter=str(folder / "adapter")), result


def trained_tracking(label: str, result: TrainResult) -> str | None:
    """Where a training just run logged its steps, as ``trackers.json`` records it (None:
    no W&B, MLflow or Trackio run)."""
    if not (runs := result.trackers):
        return None
    return (f"align {label}: training steps logged to "
            f"{', '.join(run_name(t, where) for t, where in runs.items())} (links.json: rounds)")


def cached_tracking(label: str, result: TrainResult, trackers: list[str]) -> str | None:
    """What a training read from the cache means for the trackers asked for: its TensorBoard
    events and the tracker runs ``trackers.json`` records, which the run links; or none to
    link, because ``report_to`` is no part of the key and the cached training ran without
    that tracker (None when no tracker is asked for)."""
    wanted = [t for t in trackers if t != "none"]
    if not wanted:
        return None
    ran_with = result.config.get("report_to") or "none"
    logged_to = [ran_with] if isinstance(ran_with, str) else list(ran_with)
    said = [f"align {label}: the training was read from the cache (trained with report_to: "
            f"{', '.join(logged_to)}; report_to is not part of the cache key)"]
    events = result.folder / "tensorboard"
    unlinked = "tensorboard" in wanted and not events.is_dir()
    if "tensorboard" in wanted:
        said.append("it logged no TensorBoard events to link" if unlinked
                    else f"its TensorBoard events are in {events} (links.json: rounds)")
    runs = result.trackers
    said += [f"its {run_name(t, runs[t])} (links.json: rounds)" for t in wanted if t in runs]
    others = [t for t in wanted if t != "tensorboard" and t not in runs]
    if unrecorded := [t for t in others if t in logged_to]:  # by a calm_rag that kept no record
        said.append(f"where its {', '.join(unrecorded)} run went was not recorded")
    if silent := [t for t in others if t not in logged_to]:
        said.append(f"no training steps go to {', '.join(silent)} (the evaluation's figures do)")
    if unlinked or others:
        said.append("--force align trains it again and logs it")
    return "; ".join(said)


def _written_by_training(folder: Path, result: TrainResult) -> None:
    """Nothing to add: the trainer wrote the adapter, the log and the plot."""


def _in_folder(result: TrainResult, folder: Path, method: str) -> TrainResult:
    """The method's result, which must be the stage's folder: one written elsewhere would be
    cached as a training that is not there."""
    if not isinstance(result, TrainResult) or result.folder.resolve() != folder.resolve():
        where = getattr(result, "folder", result)
        raise RuntimeError(f"align method {method!r} returned {where!r}, not a TrainResult of "
                           f"the folder it was given ({folder})")
    return result


def align_for_backend(experiment: Experiment) -> AlignConfig:
    """The align block, with ``merge`` on for a backend that loads no adapter (a plugin's
    that says so): it can only sample a merged model."""
    generator = experiment.generator
    if experiment.align.merge or generator.backend_class.loads_adapters:
        return experiment.align
    log.info(f"align.merge: on, the {generator.backend} backend cannot load an adapter")
    return dataclasses.replace(experiment.align, merge=True)
