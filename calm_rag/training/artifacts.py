"""What a training run leaves beside its adapter: the merged model (on request), the step log,
the loss plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calm_rag.io import write_json
from calm_rag.training.config import AlignConfig


def save_merged(model_path: str, adapter: Path, folder: Path) -> None:
    """The adapter folded into the base weights: a plain transformers folder (tokenizer and
    chat template included) in the base model's saved dtype, so vLLM and ``hf`` load it as is.

    Built from the written adapter, not the trained model in memory: under ZeRO-3 or FSDP only
    the saved adapter is whole.
    """
    from peft import PeftModel

    from calm_rag.models import load_causal_lm, resolve_generator
    from calm_rag.models.loading import saved_dtype

    path = resolve_generator(model_path)
    base, tokenizer = load_causal_lm(path, dtype="float32")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.config.use_cache = True  # generation wants the KV cache back
    merged.to(saved_dtype(path)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_log(folder: Path, method: str, config: AlignConfig, rows: int,
              history: list[dict[str, Any]], seconds: float,
              extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write ``train_log.json`` (``extra``: how it ran) and ``loss.png``; return the steps."""
    steps = [entry for entry in history if "loss" in entry]
    summary: dict[str, Any] = next(
        (entry for entry in reversed(history) if "train_runtime" in entry), {})
    write_json(folder / "train_log.json", {
        "method": method, "config": config.to_dict(), "rows": rows,
        "seconds": round(seconds, 2), **(extra or {}), "summary": summary, "steps": steps,
    })
    plot_loss(steps, folder / "loss.png", title=f"{method.upper()} on {rows} rows")
    return steps


def plot_loss(steps: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss per optimiser step; with DPO also the reward margin (chosen − rejected)."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI
    from matplotlib.ticker import MaxNLocator

    margins = [s for s in steps if "rewards/margins" in s]
    fig = Figure(figsize=(6, 3.2 * (2 if margins else 1)), layout="constrained")
    grid = fig.subplots(2 if margins else 1, 1, sharex=True, squeeze=False)
    axes: list[Axes] = list(grid[:, 0])
    axes[0].plot([s["step"] for s in steps], [s["loss"] for s in steps], marker=".")
    axes[0].set_ylabel("loss")
    axes[0].set_title(title)
    if margins:
        axes[1].plot([s["step"] for s in margins], [s["rewards/margins"] for s in margins],
                     marker=".", color="tab:green")
        axes[1].axhline(0, color="grey", linewidth=0.8)
        axes[1].set_ylabel("reward margin")
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=100)
