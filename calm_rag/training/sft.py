"""The supervised baseline: fine-tune (LoRA) on the responses that agree with the target."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.records import Sample, Vote
from calm_rag.sampling.chat import recorded_chat
from calm_rag.training.common import (
    MakeTrainer,
    TrainResult,
    new_lora,
    run_training,
    with_template_kwargs,
)
from calm_rag.training.config import TARGETS, AlignConfig


def sft_targets(samples: Iterable[Sample], votes: Iterable[Vote],
                target: str = "majority") -> list[Sample]:
    """The samples whose answer is their question's target in the same setting: the vote's
    answer (``majority``) or the dataset's label (``gold``). Undecided questions give none."""
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}", field="align.target",
                         hint=f"use one of {', '.join(TARGETS)}")
    decided = {(v.question_id, v.setting): v.answer for v in votes if v.answer is not None}
    keep = []
    for sample in samples:
        wanted = (sample.question.answer if target == "gold"
                  else decided.get((sample.question.id, sample.setting)))
        if wanted is not None and sample.answer == wanted:
            keep.append(sample)
    return keep


def train_sft(model_path: str | Path, samples: list[Sample], config: AlignConfig,
              out_dir: str | Path, adapter: str | None = None) -> TrainResult:
    """Train a LoRA adapter on ``samples`` (prompt → its response, loss on the response only);
    write what :func:`~calm_rag.training.train_dpo` writes. With ``adapter`` (a previous
    round's) that adapter goes on training."""
    if not samples:
        raise InputError("no responses to fine-tune on: no sample agrees with its question's "
                         "target", field="align",
                         hint="sample more questions or responses (sampling.n), or check that "
                              "answers were extracted")
    rows = [with_template_kwargs(sft_row(sample), config) for sample in samples]
    return run_training("sft", model_path, rows, config, out_dir, sft_trainer(config, rows),
                        adapter=adapter)


def sft_trainer(config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
    """What builds TRL's SFTTrainer (in this process or a launched rank)."""

    def make_trainer(model: Any, tokenizer: Any, dataset: Any, args: dict[str, Any]) -> Any:
        from trl import SFTConfig, SFTTrainer

        return SFTTrainer(model=model, args=SFTConfig(**args), train_dataset=dataset,
                          processing_class=tokenizer, peft_config=new_lora(config, model))

    return make_trainer


def sft_row(sample: Sample) -> dict[str, Any]:
    """A conversational prompt-completion row: the sampler's chat, then the response."""
    prompt = recorded_chat(
        sample.instruction, sample.input, what=f"sample {sample.id}",
        hint="sample again with this version, which records the prompt fields")
    return {
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": sample.text}],
    }
