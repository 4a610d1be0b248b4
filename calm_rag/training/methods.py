"""Align methods by name (``align.method``): what rows a method trains on, and how it trains.

A new method is one subclass of :class:`AlignMethod` decorated with
``@ALIGN_METHODS.register("name")``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.registries import ALIGN_METHODS


class AlignMethod(ABC):
    """One way of training the policy on the outcome of the vote."""

    @staticmethod
    @abstractmethod
    def rows(samples: list[Sample], votes: list[Vote], pairs: list[PreferencePair]) -> list[Any]:
        """The training rows, from the samples, the target votes and their pairs."""

    @staticmethod
    @abstractmethod
    def train(model_path: str | Path, rows: list[Any], config: Any, out_dir: Path,
              adapter: str | None = None) -> Any:
        """Train on ``rows`` (going on from ``adapter`` when given, a previous round's); write
        the adapter, ``train_log.json`` and ``loss.png`` (``merged/`` with ``align.merge``)."""


@ALIGN_METHODS.register("dpo")
class DPO(AlignMethod):
    """DPO (TRL) with a LoRA adapter on the preference pairs."""

    @staticmethod
    def rows(samples: list[Sample], votes: list[Vote], pairs: list[PreferencePair]) -> list[Any]:
        return list(pairs)

    @staticmethod
    def train(model_path: str | Path, rows: list[Any], config: Any, out_dir: Path,
              adapter: str | None = None) -> Any:
        from calm_rag.training.dpo import train_dpo

        return train_dpo(model_path, rows, config, out_dir, adapter)


@ALIGN_METHODS.register("sft")
class SFT(AlignMethod):
    """Supervised fine-tuning on the responses that agree with the target (CALM's baseline)."""

    @staticmethod
    def rows(samples: list[Sample], votes: list[Vote], pairs: list[PreferencePair]) -> list[Any]:
        from calm_rag.training.sft import sft_targets

        return sft_targets(samples, votes)

    @staticmethod
    def train(model_path: str | Path, rows: list[Any], config: Any, out_dir: Path,
              adapter: str | None = None) -> Any:
        from calm_rag.training.sft import train_sft

        return train_sft(model_path, rows, config, out_dir, adapter)
