"""The one training workflow DPO and SFT share: load → prepare → train → save → plot.

Each method only says how its rows look and which TRL trainer takes them; loading the
policy, threads, quiet logs, the atomic output folder and the artifacts are done here once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import atomic_dir, read_json
from calm_rag.runtime.threads import torch_threads
from calm_rag.training.artifacts import save_merged, write_log
from calm_rag.training.checkpoints import checkpoint_folder, last_checkpoint, sealing_callback
from calm_rag.training.config import AlignConfig
from calm_rag.training.tracker_runs import read_tracker_runs, run_recorder, write_tracker_runs

log = logging.getLogger(__name__)

# Builds the TRL trainer: (model, tokenizer, dataset, trainer arguments) -> trainer.
MakeTrainer = Callable[[Any, Any, Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class TrainResult:
    """One training, as its folder holds it: what :meth:`AlignMethod.train` returns and what
    the align stage reads back from the cache (:meth:`load`), so both are the same value."""

    folder: Path
    """``adapter/``, ``train_log.json``, ``loss.png``; ``merged/`` with ``align.merge``."""
    method: str
    rows: int  # rows actually trained on (after dropping prompts longer than max_length)
    log: list[dict[str, Any]]  # one entry a step: step, epoch, loss, learning_rate, rewards/...
    seconds: float  # the training's own time, as train_log.json says
    config: dict[str, Any]  # the align block it ran with (plain values)

    @classmethod
    def load(cls, folder: str | Path) -> TrainResult:
        """A finished training read back from its folder (``train_log.json``): every version
        of calm_rag has written these keys."""
        folder = Path(folder)
        written = read_json(folder / "train_log.json")
        missing = [k for k in ("method", "rows", "seconds", "config", "steps")
                   if k not in written]
        if missing:
            raise InputError(f"train_log.json lacks {', '.join(missing)}",
                             path=folder / "train_log.json",
                             hint="not a finished training: delete the folder to train again")
        return cls(folder, written["method"], written["rows"], written["steps"],
                   written["seconds"], written["config"])

    @property
    def adapter_dir(self) -> Path:
        return self.folder / "adapter"

    @property
    def merged_dir(self) -> Path | None:
        """The adapter folded into the base weights; None unless ``align.merge``."""
        merged = self.folder / "merged"
        return merged if merged.is_dir() else None

    @property
    def trackers(self) -> dict[str, dict[str, str]]:
        """Where its W&B, MLflow and Trackio runs went (``trackers.json``), by tracker; folders
        relative to :attr:`folder`."""
        return read_tracker_runs(self.folder)

    @property
    def loss_plot(self) -> Path:
        return self.folder / "loss.png"

    @property
    def target(self) -> str | None:
        """What the rows preferred: ``majority`` (the vote) or ``gold``."""
        return self.config.get("target")

    @property
    def final_loss(self) -> float | None:
        return self.log[-1]["loss"] if self.log else None


@dataclass(frozen=True)
class TrainJob:
    """What to train, everything but the rows: the child of a launcher gets it as JSON."""

    method: str
    model_path: str
    config: AlignConfig
    checkpoints: Path
    adapter: str | None = None  # a previous round's adapter to go on training


def run_training(method: str, model_path: str | Path, rows: list[dict[str, Any]],
                 config: AlignConfig, out_dir: str | Path, make_trainer: MakeTrainer,
                 adapter: str | None = None) -> TrainResult:
    """Train a LoRA adapter on ``rows`` and write ``out_dir`` (adapter, log, plot; the merged
    model with ``align.merge``), here or in a child under ``accelerate launch``.

    ``out_dir`` appears only when everything is written; a failure leaves any previous one.
    Checkpoints (``align.save_steps``) go beside it, survive a kill, and are removed at the end.
    """
    from datasets import Dataset

    from calm_rag.training.launch import launch

    out_dir = Path(out_dir)
    job = TrainJob(method, str(model_path), config, checkpoint_folder(out_dir), adapter)
    with atomic_dir(out_dir) as staging:
        if config.launcher == "accelerate":
            launch(job, rows, staging)
        else:
            train_into(job, Dataset.from_list(rows), staging, make_trainer)
    shutil.rmtree(job.checkpoints, ignore_errors=True)
    return TrainResult.load(out_dir)


def with_template_kwargs(row: dict[str, Any], config: AlignConfig) -> dict[str, Any]:
    """A TRL row that renders its prompt as the sampler did: TRL passes a row's
    ``chat_template_kwargs`` to the chat template (none given: the row as it is, so that
    every row has the same columns)."""
    if not config.chat_template_kwargs:
        return row
    return row | {"chat_template_kwargs": dict(config.chat_template_kwargs)}


def train_into(job: TrainJob, dataset: Any, staging: Path, make_trainer: MakeTrainer) -> None:
    """Train on ``dataset`` in this process (one rank of a launch, or the only one); rank 0
    writes."""
    started, config = time.perf_counter(), job.config
    with torch_threads(config.threads), _quiet(), _tensorboard(staging / "tensorboard"):
        model, tokenizer = load_policy(job.model_path, config, job.adapter)
        args = trainer_args(config, job.checkpoints if config.save_steps else staging / "trainer",
                            gpu=_gpu())
        trainer = make_trainer(model, tokenizer, dataset, args)
        kept = _check_rows(len(dataset), len(trainer.train_dataset), config)
        _one_gpu_in_process(trainer)
        _show_progress(trainer, desc=f"training ({job.method})")
        if config.save_steps:
            trainer.add_callback(sealing_callback(trainer))
        runs: dict[str, dict[str, str]] = {}
        trainer.add_callback(run_recorder(config.trackers, staging, runs))
        last = last_checkpoint(job.checkpoints) if config.save_steps else None
        if last is not None and trainer.is_world_process_zero():
            log.info("resuming from %s", last.name)
        trainer.train(resume_from_checkpoint=str(last) if last else None)
        if "ref" in getattr(trainer.model, "peft_config", {}):
            trainer.model.delete_adapter("ref")  # TRL's frozen copy of the previous round's
        trainer.save_model(str(staging / "adapter"))  # gathers shards under ZeRO-3/FSDP
        if not trainer.is_world_process_zero():
            return
        (staging / "adapter" / "training_args.bin").unlink(missing_ok=True)
        shutil.rmtree(staging / "trainer", ignore_errors=True)  # scratch without save_steps
        if config.merge:
            save_merged(job.model_path, staging / "adapter", staging / "merged")
        state = trainer.accelerator.state
        write_log(staging, job.method, config, kept, trainer.state.log_history,
                  seconds=time.perf_counter() - started,
                  extra={"processes": state.num_processes, "backend": state.backend,
                         "resumed_from": last.name if last else None})
        write_tracker_runs(staging, config.trackers, runs, last.name if last else None)


def load_policy(model_path: str | Path, config: AlignConfig,
                adapter: str | None = None) -> tuple[Any, Any]:
    """The model and its tokenizer; with ``adapter``, that adapter ready to train on.

    Float32 on a CPU (training needs it; the default folder is bf16); bf16 on a GPU that
    computes in it, when the precision asks for bf16.
    """
    from calm_rag.models import load_causal_lm, resolve_generator

    gpu = _gpu()
    dtype = "bfloat16" if gpu and use_bf16(config.precision, gpu) else "float32"
    model, tokenizer = load_causal_lm(resolve_generator(str(model_path)), dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    return model, tokenizer


def trainer_args(config: AlignConfig, output_dir: Path, gpu: bool) -> dict[str, Any]:
    """The TrainingArguments both DPOConfig and SFTConfig take, from the ``align:`` block."""
    if config.precision == "fp16" and not gpu:
        raise InputError("fp16 training needs a GPU", field="align.precision",
                         hint="use bf16, fp32 or auto on a CPU")
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": 1,  # the loss plot shows every step
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "report_to": config.trackers,
        "use_cpu": not gpu,
        "bf16": use_bf16(config.precision, gpu),
        "fp16": config.precision == "fp16",
        # Off by default although TRL turns it on (slower steps); lora.layers
        # and batch_size bound the activation memory instead.
        "gradient_checkpointing": config.gradient_checkpointing,
        "dataloader_pin_memory": gpu,
        "ddp_find_unused_parameters": False,  # every LoRA weight is used in every step
        "disable_tqdm": False,
        **config.trainer,
    }


def use_bf16(precision: str, gpu: bool) -> bool:
    """Whether to autocast to bf16: asked for, or ``auto`` on hardware with native bf16
    (:func:`calm_rag.runtime.hardware.auto_precision`, the samplers' and scorer's choice too)."""
    from calm_rag.runtime.hardware import auto_precision

    if precision != "auto":
        return precision == "bf16"
    return auto_precision(gpu=gpu).bf16


def _one_gpu_in_process(trainer: Any) -> None:
    """Several GPUs seen by one process: the Trainer would wrap the model in nn.DataParallel
    (one process driving all, slower than one GPU for a LoRA); train on the first instead."""
    args = trainer.args
    if args.world_size == 1 and args.n_gpu > 1:
        log.warning("%d GPUs visible: training in-process uses one; align.launcher: "
                    "accelerate with num_processes: %d uses all", args.n_gpu, args.n_gpu)
        args._n_gpu = 1  # read by the Trainer's DataParallel check and batch size


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def _tensorboard(folder: Path) -> Iterator[None]:
    """TensorBoard's events into ``folder`` (transformers reads the variable, not an argument)."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


def new_lora(config: AlignConfig, model: Any) -> Any:
    """A new adapter's config, or None for a model that already has one (it goes on
    training; TRL refuses a second adapter on top)."""
    from peft import PeftModel

    return None if isinstance(model, PeftModel) else lora_config(config, model)


def lora_config(config: AlignConfig, model: Any) -> Any:
    """PEFT's LoraConfig for a causal LM from the ``align.lora`` block."""
    from peft import LoraConfig

    lora = config.lora
    layers = None
    if lora.layers is not None:
        total = model.config.get_text_config().num_hidden_layers
        layers = list(range(max(0, total - lora.layers), total))
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.targets), layers_to_transform=layers,
                      bias="none", task_type="CAUSAL_LM")


def _check_rows(given: int, kept: int, config: AlignConfig) -> int:
    """TRL drops rows whose prompt alone fills max_length; none left is the user's to fix."""
    if kept == 0:
        raise no_rows_left(given, config)
    if kept < given:
        log.warning("dropped %d of %d rows whose prompt fills align.max_length=%d",
                    given - kept, given, config.max_length)
    return kept


def no_rows_left(given: int, config: AlignConfig) -> InputError:
    """The error for rows whose prompts all fill ``align.max_length``."""
    return InputError(f"every one of the {given} prompts is at least {config.max_length} "
                      "tokens long, so no row is left to train on", field="align.max_length",
                      hint="raise align.max_length (the prompts with retrieved passages "
                           "are the longest)")


def _show_progress(trainer: Any, desc: str) -> None:
    """One progress bar with the loss on it, instead of a printed dict every step."""
    from transformers.trainer_callback import ProgressCallback

    class LossBar(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            from calm_rag.runtime.progress import progress_bar

            if not state.is_world_process_zero:
                return  # one bar for all the ranks
            self.training_bar = progress_bar(desc, state.max_steps, unit="step")
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}")

    trainer.remove_callback(ProgressCallback)
    try:  # Jupyter's HTML table, with timings: it needs IPython, and is never added without it
        from transformers.utils.notebook import NotebookProgressCallback
    except ImportError:
        pass
    else:
        trainer.remove_callback(NotebookProgressCallback)
    trainer.add_callback(LossBar())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide info chatter and the sub-second bars (weights loading and writing, dataset maps);
    keep warnings and the training bar."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_bars, data_bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if hf_bars:
            hf_logging.enable_progress_bar()
        if data_bars:
            datasets.enable_progress_bars()
