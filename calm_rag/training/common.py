"""The one training workflow DPO and SFT share: load → prepare → train → save → plot.

Each method only says how its rows look and which TRL trainer takes them; loading the
policy, threads, quiet logs, the atomic output folder and the artifacts are done here once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import atomic_dir
from calm_rag.threads import torch_threads
from calm_rag.training.artifacts import save_adapter, save_merged, write_log
from calm_rag.training.config import AlignConfig

log = logging.getLogger(__name__)

# Builds the TRL trainer: (model, tokenizer, dataset, trainer arguments) -> trainer.
MakeTrainer = Callable[[Any, Any, Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class TrainResult:
    """What a training run left in its output folder, and how it went."""

    adapter_dir: Path
    merged_dir: Path
    log: list[dict[str, Any]]  # one entry a step: step, epoch, loss, learning_rate, rewards/...
    loss_plot: Path
    seconds: float
    rows: int  # rows actually trained on (after dropping prompts longer than max_length)


def run_training(method: str, model_path: str | Path, rows: list[dict[str, Any]],
                 config: AlignConfig, out_dir: str | Path, make_trainer: MakeTrainer
                 ) -> TrainResult:
    """Train a LoRA adapter on ``rows`` and write ``out_dir`` (adapter, merged, log, plot).

    ``out_dir`` appears only when everything is written; a failure leaves any previous one.
    """
    from datasets import Dataset

    started = time.perf_counter()
    out_dir = Path(out_dir)
    with torch_threads(config.threads), _quiet(), atomic_dir(out_dir) as staging:
        model, tokenizer, base_dtype = load_policy(model_path)
        args = trainer_args(config, staging / "trainer")
        trainer = make_trainer(model, tokenizer, Dataset.from_list(rows), args)
        kept = _check_rows(len(rows), len(trainer.train_dataset), config)
        _show_progress(trainer, desc=f"training ({method})")
        trainer.train()
        shutil.rmtree(staging / "trainer", ignore_errors=True)  # scratch; save_strategy is "no"
        save_adapter(trainer.model, tokenizer, staging / "adapter")
        save_merged(trainer.model, tokenizer, staging / "merged", base_dtype)
        steps = write_log(staging, method, config, kept, trainer.state.log_history,
                          seconds=time.perf_counter() - started)
    return TrainResult(adapter_dir=out_dir / "adapter", merged_dir=out_dir / "merged",
                       log=steps, loss_plot=out_dir / "loss.png",
                       seconds=time.perf_counter() - started, rows=kept)


def load_policy(model_path: str | Path) -> tuple[Any, Any, Any]:
    """The model in float32 (CPU training needs it; the default folder is bf16), its
    tokenizer, and the dtype it was saved in (the merged model is saved back in it)."""
    from calm_rag.models import load_causal_lm, resolve_generator
    from calm_rag.models.loading import saved_dtype

    path = resolve_generator(str(model_path))
    model, tokenizer = load_causal_lm(path, dtype="float32")
    return model, tokenizer, saved_dtype(path)


def trainer_args(config: AlignConfig, scratch: Path) -> dict[str, Any]:
    """The TrainingArguments both DPOConfig and SFTConfig take, from the ``align:`` block."""
    import torch

    gpu = torch.cuda.is_available()
    return {
        "output_dir": str(scratch),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": 1,  # the loss plot shows every step
        "save_strategy": "no",  # the adapter and merged model are saved once, at the end
        "report_to": "none",
        "use_cpu": not gpu,
        "bf16": use_bf16(config.precision, gpu),
        # TRL turns it on by default (steps ~20% slower, TRL says); lora.layers and batch_size
        # bound the activation memory instead (SmolLM2-135M: 3.7 GB peak at last 8 layers, 2).
        "gradient_checkpointing": False,
        "dataloader_pin_memory": gpu,
        "disable_tqdm": False,
    }


def use_bf16(precision: str, gpu: bool) -> bool:
    """Whether to autocast to bf16: asked for, or ``auto`` on hardware with native bf16
    (:func:`calm_rag.hardware.auto_precision`, the samplers' and scorer's choice too)."""
    from calm_rag.hardware import auto_precision

    if precision != "auto":
        return precision == "bf16"
    return auto_precision(gpu=gpu).bf16


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
            from tqdm.auto import tqdm

            self.training_bar = tqdm(total=state.max_steps, desc=desc, unit="step")
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}")

    from transformers.utils.notebook import NotebookProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(NotebookProgressCallback)  # Jupyter's HTML table, with timings
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
