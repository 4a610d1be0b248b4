"""The ``align:`` block of an experiment: how the policy is trained on the votes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from calm_rag.config import at_least, check_seed
from calm_rag.errors import InputError
from calm_rag.registries import ALIGN_METHODS

TARGETS = ("majority", "gold")
PRECISIONS = ("auto", "fp32", "bf16")


def _check(key: str, ok: bool, value: Any, why: str, hint: str) -> None:
    if not ok:
        raise InputError(f"{why}, got {value!r}", field=key, hint=hint)


@dataclass(frozen=True)
class LoraConfig:
    """Parameters of the LoRA adapter (the ``align.lora:`` block).

    Only the adapter trains; the base weights stay frozen and, with DPO, double as the
    reference model (the adapter switched off), so no second copy of the model is held.
    """

    r: int = 8
    """LoRA rank: the adapter's inner dimension."""
    alpha: float = 16
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter's input, in [0, 1)."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear layers that get an adapter (attention by default)."""
    layers: int | None = None
    """Adapt only the last N decoder layers (null: all). Backpropagation stops at the lowest
    adapted layer, so fewer layers train faster."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        at_least(self, 1, "r", hint="e.g. 8 or 16")
        _check("alpha", self.alpha > 0, self.alpha, "must be positive", "e.g. 2 * r")
        _check("dropout", 0 <= self.dropout < 1, self.dropout, "must lie in [0, 1)", "e.g. 0.05")
        _check("targets", bool(self.targets) and all(self.targets), self.targets,
               "must name at least one layer", "e.g. [q_proj, v_proj]")
        at_least(self, 1, "layers", hint="or null for every layer")


@dataclass(frozen=True)
class AlignConfig:
    """Parameters that control the alignment (the ``align:`` block of an experiment)."""

    method: str = "dpo"
    """A registered align method: ``dpo`` trains on the preference pairs; ``sft`` fine-tunes
    on the responses that agree with the target (CALM's supervised baseline)."""
    target: Literal["majority", "gold"] = "majority"
    """``majority`` takes the cross-lingual vote as the answer to prefer; ``gold`` takes the
    dataset's label instead (an upper-bound baseline)."""
    rounds: int = 1
    """Sample → vote → train rounds, each from the last policy (0: no training, the base model
    is evaluated)."""
    beta: float = 0.1
    """DPO's β: higher keeps the policy closer to the reference model."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate, in (0, 1]."""
    epochs: float = 1
    """Passes over the training rows."""
    batch_size: int = 4
    """Rows per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimiser step (effective batch × this)."""
    max_length: int = 512
    """Tokens of prompt + response kept; a row whose prompt alone is this long is dropped."""
    lora: LoraConfig = LoraConfig()
    """The LoRA adapter (``align.lora.*``)."""
    seed: int = 0
    """Seed of the adapter's init and the shuffle."""
    threads: int | None = None
    """CPU threads for torch; default: the cores available."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute precision: fp32, bf16 (autocast; weights and adapter stay fp32), or auto: bf16
    where the hardware computes it natively (a bf16 GPU, or a CPU with AVX512-BF16/AMX), else
    fp32."""

    def __post_init__(self) -> None:
        ALIGN_METHODS.check(self.method, "method")
        _check("target", self.target in TARGETS, self.target, "unknown target",
               f"use one of {', '.join(TARGETS)}")
        _check("precision", self.precision in PRECISIONS, self.precision, "unknown precision",
               f"use one of {', '.join(PRECISIONS)}")
        _check("rounds", 0 <= self.rounds <= 100, self.rounds, "must lie in [0, 100]",
               "0 samples, votes and evaluates without training")
        at_least(self, 1, "batch_size", "grad_accum", hint="a whole number, 1 or more")
        for key in ("beta", "epochs"):
            _check(key, getattr(self, key) > 0, getattr(self, key), "must be positive",
                   "e.g. " + {"beta": "0.1", "epochs": "1"}[key])
        _check("learning_rate", 0 < self.learning_rate <= 1, self.learning_rate,
               "must lie in (0, 1]", "e.g. 5e-5")
        _check("max_length", self.max_length >= 8, self.max_length, "must be at least 8",
               "room for the prompt and the response, e.g. 512")
        at_least(self, 1, "threads", hint="or null for every core available")
        check_seed(self, "seed")

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the resolved config and the cache key."""
        values = dataclasses.asdict(self)
        values["lora"]["targets"] = list(self.lora.targets)
        return values

