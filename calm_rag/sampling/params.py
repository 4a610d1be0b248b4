"""How a generator is sampled: the knobs every backend understands."""

from __future__ import annotations

from dataclasses import dataclass

from calm_rag.config import at_least, check_seed
from calm_rag.errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    """Parameters that control the sampling of responses (the ``sampling:`` block of a config).

    CALM samples each question ``n`` times per language at a moderate temperature, so that the
    responses can disagree and the cross-lingual vote has something to decide.
    """

    n: int = 3
    """Responses sampled per prompt (per language)."""
    temperature: float = 0.7
    """Softmax temperature; 0 means greedy decoding (n identical copies)."""
    top_p: float = 0.95
    """Nucleus sampling: keep the likeliest tokens of this mass, in (0, 1]."""
    max_tokens: int = 192
    """New tokens per response, at most (explanation + letter)."""
    seed: int = 0
    """Random seed: the same seed and inputs give the same texts."""
    forced_answer: bool = False
    """End every response with the localized answer marker and one option letter, after a
    one-line explanation cut to fit max_tokens (vLLM's structured output: the vllm backend
    only). Extraction then always finds a letter."""

    def __post_init__(self) -> None:
        at_least(self, 1, "n", "max_tokens")
        if not 0 <= self.temperature <= 100:
            raise InputError(f"must lie in [0, 100], got {self.temperature!r}",
                             field="temperature", hint="0 is greedy decoding")
        if not 0 < self.top_p <= 1:
            raise InputError(f"must lie in (0, 1], got {self.top_p!r}", field="top_p")
        check_seed(self, "seed")

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic (temperature 0)."""
        return self.temperature == 0
