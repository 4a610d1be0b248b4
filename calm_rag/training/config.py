"""The ``align:`` block of an experiment: how the policy is trained on the votes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from calm_rag.errors import InputError

METHODS = ("dpo", "sft")
TARGETS = ("majority", "gold")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class LoraSettings:
    """Parameters of the LoRA adapter (the ``align.lora:`` block).

    Only the adapter trains; the base weights stay frozen and, with DPO, double as the
    reference model (the adapter switched off), so no second copy of the model is held.
    """

    r: int = field(default=8, metadata={"help": "LoRA rank: the adapter's inner dimension."})
    alpha: float = field(
        default=16, metadata={"help": "LoRA scaling numerator: updates are scaled by alpha / r."}
    )
    dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the adapter's input, in [0, 1)."}
    )
    targets: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "Names of the linear layers that get an adapter (attention by default)."},
    )
    layers: int | None = field(
        default=None,
        metadata={"help": "Adapt only the last N decoder layers (null: all). Backpropagation "
                          "stops at the lowest adapted layer, so fewer layers train faster."},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        _check("lora.r", self.r >= 1, self.r, "must be at least 1", "e.g. 8 or 16")
        _check("lora.alpha", self.alpha > 0, self.alpha, "must be positive", "e.g. 2 * r")
        _check("lora.dropout", 0 <= self.dropout < 1, self.dropout, "must lie in [0, 1)",
               "e.g. 0.05")
        _check("lora.targets", bool(self.targets) and all(self.targets), self.targets,
               "must name at least one layer", "e.g. [q_proj, v_proj]")
        _check("lora.layers", self.layers is None or self.layers >= 1, self.layers,
               "must be at least 1", "or null for every layer")


@dataclass(frozen=True)
class AlignConfig:
    """Parameters that control the alignment (the ``align:`` block of an experiment).

    Parameters that choose what is trained:
        method: ``dpo`` trains on the preference pairs; ``sft`` fine-tunes on the responses
            that agree with the target (CALM's supervised baseline).
        target: ``majority`` takes the cross-lingual vote as the answer to prefer; ``gold``
            takes the dataset's label instead (an upper-bound baseline).
        rounds: sample → vote → train iterations, each starting from the last policy.
    Parameters of the optimisation:
        beta, learning_rate, epochs, batch_size, grad_accum, max_length, seed, threads,
        precision.
    Parameters of the adapter:
        lora: see :class:`LoraSettings`.
    """

    method: str = field(default="dpo", metadata={"help": f"One of {', '.join(METHODS)}."})
    target: str = field(default="majority", metadata={"help": f"One of {', '.join(TARGETS)}."})
    rounds: int = field(
        default=1, metadata={"help": "Sample → vote → train rounds, each from the last policy "
                                   "(0: no training, the base model is evaluated)."}
    )
    beta: float = field(
        default=0.1,
        metadata={"help": "DPO's β: higher keeps the policy closer to the reference model."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate."})
    epochs: float = field(default=1, metadata={"help": "Passes over the training rows."})
    batch_size: int = field(default=4, metadata={"help": "Rows per forward pass."})
    grad_accum: int = field(
        default=1, metadata={"help": "Forward passes per optimiser step (effective batch × this)."}
    )
    max_length: int = field(
        default=512,
        metadata={"help": "Tokens of prompt + response kept; a row whose prompt alone is this "
                          "long is dropped."},
    )
    lora: LoraSettings = field(
        default_factory=LoraSettings, metadata={"help": "The LoRA adapter (align.lora.*)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the adapter's init and the shuffle."})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch; default: the cores available."}
    )
    precision: str = field(
        default="auto",
        metadata={"help": "Compute precision: fp32, bf16 (autocast; weights and adapter stay "
                          "fp32), or auto: bf16 where the hardware computes it natively "
                          "(a bf16 GPU, or a CPU with AVX512-BF16/AMX), else fp32."},
    )

    def __post_init__(self) -> None:
        _check("method", self.method in METHODS, self.method, "unknown method",
               f"use one of {', '.join(METHODS)}")
        _check("target", self.target in TARGETS, self.target, "unknown target",
               f"use one of {', '.join(TARGETS)}")
        _check("precision", self.precision in PRECISIONS, self.precision, "unknown precision",
               f"use one of {', '.join(PRECISIONS)}")
        _check("rounds", self.rounds >= 0, self.rounds, "must be 0 or more",
               "0 samples, votes and evaluates without training")
        for key in ("batch_size", "grad_accum"):
            _check(key, getattr(self, key) >= 1, getattr(self, key), "must be at least 1",
                   "a whole number, 1 or more")
        for key in ("beta", "learning_rate", "epochs"):
            _check(key, getattr(self, key) > 0, getattr(self, key), "must be positive",
                   "e.g. " + {"beta": "0.1", "learning_rate": "5.0e-5", "epochs": "1"}[key])
        _check("max_length", self.max_length >= 8, self.max_length, "must be at least 8",
               "room for the prompt and the response, e.g. 512")
        _check("threads", self.threads is None or self.threads >= 1, self.threads,
               "must be at least 1", "or null for every core available")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlignConfig:
        """Build from the ``align:`` mapping; unknown keys and wrong types name the key."""
        values = dict(_typed(cls, values, "align"))
        if "lora" in values:
            values["lora"] = LoraSettings(**_typed(LoraSettings, values["lora"], "align.lora"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the resolved config and the cache key."""
        values = dataclasses.asdict(self)
        values["lora"]["targets"] = list(self.lora.targets)
        return values


# What each annotation accepts from YAML, and how the error names it.
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "int | None": ((int, type(None)), "a whole number or null"),
    "tuple[str, ...]": ((list, tuple), "a list of layer names"),
    "LoraSettings": ((dict,), "a mapping (r, alpha, dropout, targets)"),
}


def _typed(cls: type, values: Any, prefix: str) -> dict[str, Any]:
    """Check keys and value types of a config mapping against ``cls``'s fields."""
    if not isinstance(values, dict):
        raise InputError(f"expected a mapping, got {type(values).__name__}", field=prefix)
    annotations = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in annotations:
            raise InputError(f"unknown key; allowed: {', '.join(annotations)}",
                             field=f"{prefix}.{key}", hint="check the spelling")
        kinds, expected = _KINDS[annotations[key]]
        if annotations[key] == "float" and isinstance(value, str):
            value = _number(value, f"{prefix}.{key}")  # YAML 1.1 reads 5e-5 as a string
        # bool is an int subclass, but `epochs: true` is surely a mistake.
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise InputError(f"expected {expected}, got {type(value).__name__} {value!r}",
                             field=f"{prefix}.{key}")
        if annotations[key] == "tuple[str, ...]" and not all(isinstance(v, str) for v in value):
            raise InputError(f"expected {expected}, got {value!r}", field=f"{prefix}.{key}")
        out[key] = value
    return out


def _number(text: str, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"expected a number, got str {text!r}", field=key) from None


def _check(key: str, ok: bool, value: Any, why: str, hint: str) -> None:
    if not ok:
        raise InputError(f"{why}, got {value!r}", field=f"align.{key}", hint=hint)
