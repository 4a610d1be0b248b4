"""Alignment: DPO (TRL + PEFT LoRA) on the cross-lingual preference pairs, and the SFT baseline.

>>> result = train_dpo(model_path, pairs, AlignConfig(), out_dir)
>>> result.adapter_dir  # the LoRA adapter: sample base + adapter for the next round
>>> # align.merge: true also writes result.merged_dir, a plain transformers folder
>>> # align.launcher: accelerate trains in a child under `accelerate launch` (see launch.py)
"""

from calm_rag.training.common import TrainResult
from calm_rag.training.config import TARGETS, AlignConfig, LoraConfig
from calm_rag.training.dpo import dpo_row, train_dpo
from calm_rag.training.sft import sft_row, sft_targets, train_sft

__all__ = [
    "TARGETS",
    "AlignConfig",
    "LoraConfig",
    "TrainResult",
    "dpo_row",
    "sft_row",
    "sft_targets",
    "train_dpo",
    "train_sft",
]
