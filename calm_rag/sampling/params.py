"""How a generator is sampled: the knobs every backend understands."""

from __future__ import annotations

from dataclasses import dataclass, field

from calm_rag.errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    """Parameters that control the sampling of responses (the ``sampling:`` block of a config).

    CALM samples each question ``n`` times per language at a moderate temperature, so that the
    responses can disagree and the cross-lingual vote has something to decide.
    """

    n: int = field(default=3, metadata={"help": "Responses sampled per prompt (per language)."})
    temperature: float = field(
        default=0.7,
        metadata={"help": "Softmax temperature; 0 means greedy decoding (n identical copies)."},
    )
    top_p: float = field(
        default=0.95, metadata={"help": "Nucleus sampling: keep the likeliest tokens of this mass."}
    )
    max_tokens: int = field(
        default=192, metadata={"help": "New tokens per response, at most (explanation + letter)."}
    )
    seed: int = field(
        default=0, metadata={"help": "Random seed: the same seed and inputs give the same texts."}
    )

    def __post_init__(self) -> None:
        checks = {
            "n": (self.n >= 1, "must be at least 1"),
            "temperature": (self.temperature >= 0, "must be 0 (greedy) or more"),
            "top_p": (0 < self.top_p <= 1, "must be in (0, 1]"),
            "max_tokens": (self.max_tokens >= 1, "must be at least 1"),
        }
        for key, (ok, why) in checks.items():
            if not ok:
                raise InputError(f"{why}, got {getattr(self, key)!r}", field=f"sampling.{key}")

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic (temperature 0)."""
        return self.temperature == 0
