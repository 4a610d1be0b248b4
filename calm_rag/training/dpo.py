"""DPO with TRL's DPOTrainer and a PEFT LoRA adapter on the cross-lingual preference pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.records import PreferencePair
from calm_rag.sampling.chat import encode_chat, recorded_chat
from calm_rag.training.common import (
    MakeTrainer,
    TrainResult,
    new_lora,
    no_rows_left,
    run_training,
    with_template_kwargs,
)
from calm_rag.training.config import AlignConfig


def train_dpo(model_path: str | Path, pairs: list[PreferencePair], config: AlignConfig,
              out_dir: str | Path, adapter: str | None = None) -> TrainResult:
    """Train a LoRA adapter on ``pairs`` with DPO; write the adapter, log and plot (and the
    merged model with ``align.merge``). With ``adapter`` (a previous round's) that adapter
    goes on training, with a frozen copy of it as the reference.

    Without one the reference model is the base itself (TRL switches the adapter off for it),
    so only one copy of the weights is held.
    """
    if not pairs:
        raise InputError("no preference pairs to train on: every question was unanimous or "
                         "undecided", field="align",
                         hint="sample more questions or responses (sampling.n), raise the "
                              "temperature, or use method: sft")
    rows = [with_template_kwargs(dpo_row(pair), config) for pair in pairs]
    return run_training("dpo", model_path, rows, config, out_dir, dpo_trainer(config, rows),
                        adapter=adapter)


def dpo_trainer(config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
    """What builds TRL's DPOTrainer for these rows (in this process or a launched rank)."""

    def make_trainer(model: Any, tokenizer: Any, dataset: Any, args: dict[str, Any]) -> Any:
        from trl import DPOConfig, DPOTrainer

        if not any(_fits(tokenizer, row, config.max_length) for row in rows):
            raise no_rows_left(len(rows), config)  # else TRL's precompute fails on no rows
        # The reference never changes: its log-probs are computed once, before training,
        # not again in every epoch.
        args = {"precompute_ref_log_probs": True,
                "precompute_ref_batch_size": 2 * config.batch_size} | args
        return DPOTrainer(model=model, args=DPOConfig(beta=config.beta, **args),
                          train_dataset=dataset, processing_class=tokenizer,
                          peft_config=new_lora(config, model))

    return make_trainer


def _fits(tokenizer: Any, row: dict[str, Any], max_length: int) -> bool:
    """Whether TRL keeps a row: its prompt, as the model reads it, is under ``max_length``."""
    return len(encode_chat(tokenizer, row["prompt"], row.get("chat_template_kwargs"))) < max_length


def dpo_row(pair: PreferencePair) -> dict[str, Any]:
    """A conversational TRL row whose prompt is the very chat the sampler was given."""
    prompt = recorded_chat(
        pair.instruction, pair.input,
        what=f"pair {pair.chosen_sample_id} vs {pair.rejected_sample_id}",
        hint="rebuild the pairs from samples that record their prompt fields")
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
    }
