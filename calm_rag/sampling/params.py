"""How a generator is sampled: the knobs every backend understands."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from calm_rag.config import at_least, at_most, check_seed
from calm_rag.errors import InputError

MAX_SAMPLES = 1024
"""Responses per prompt, at most (``sampling.n``)."""
MAX_TOKENS = 131_072
"""New tokens per response, at most (``sampling.max_tokens``)."""
# Fields added after caches were keyed on every field: in a cache key only when set, so that
# the caches of runs that leave them out stay valid (see SamplingParams.cache_fields).
LATER_FIELDS = ("stop", "top_k", "min_p", "chat_template_kwargs")
# apply_chat_template's own arguments, which calm_rag sets (calm_rag.sampling.chat).
TEMPLATE_ARGS = ("conversation", "tokenize", "add_generation_prompt", "return_dict",
                 "continue_final_message", "return_tensors", "tools", "documents")


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
    stop: tuple[str, ...] = ()
    """Strings that end a response where they first appear; the text stops before them (e.g.
    ["</answer>"]). Not with forced_answer."""
    top_k: int | None = None
    """Sample from the k likeliest tokens only, 1 or more; default: no cut (top_k 1 is
    greedy)."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the likeliest token's, in [0, 1);
    0: no cut."""
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    """Keyword arguments for the model's chat template (apply_chat_template), e.g.
    {enable_thinking: false} for a thinking model; the openai backend sends them to the
    server. The log-prob scorer and training render prompts with them too."""

    def __post_init__(self) -> None:
        at_least(self, 1, "n", "max_tokens", "top_k")
        at_most(self, MAX_SAMPLES, "n", why="a prompt's n responses are generated, held and "
                "voted on together; CALM samples a few per language")
        at_most(self, MAX_TOKENS, "max_tokens", why="longer than the context of the models "
                "calm_rag samples; a response is an explanation and one letter")
        if not 0 <= self.temperature <= 100:
            raise InputError(f"must lie in [0, 100], got {self.temperature!r}",
                             field="temperature", hint="0 is greedy decoding")
        if not 0 < self.top_p <= 1:
            raise InputError(f"must lie in (0, 1], got {self.top_p!r}", field="top_p")
        if not 0 <= self.min_p < 1:
            raise InputError(f"must lie in [0, 1), got {self.min_p!r}", field="min_p")
        check_seed(self, "seed")
        self._check_stop()
        self._check_template_kwargs()

    def _check_stop(self) -> None:
        # A list given in code is kept as a tuple: the params stay immutable and hashable.
        object.__setattr__(self, "stop", tuple(self.stop))
        for i, text in enumerate(self.stop):
            if not isinstance(text, str) or not text:
                raise InputError(f"must be a non-empty string, got {text!r}", field=f"stop[{i}]")
        if self.stop and self.forced_answer:
            raise InputError("cannot be combined with forced_answer", field="stop",
                             hint="a stop string could cut the forced answer letter: "
                                  "leave one of them out")

    def _check_template_kwargs(self) -> None:
        for key in self.chat_template_kwargs:
            if not isinstance(key, str) or not key.isidentifier():
                raise InputError("must be a keyword name", field=f"chat_template_kwargs.{key}")
            if key in TEMPLATE_ARGS:
                raise InputError("is set by calm_rag itself",
                                 field=f"chat_template_kwargs.{key}",
                                 hint="leave it out (the prompt ends ready for the reply)")
        try:  # they cross to the engine's process and to a server as JSON
            json.dumps(self.chat_template_kwargs, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InputError(f"must hold plain values (text, numbers, booleans, lists, "
                             f"mappings): {err}", field="chat_template_kwargs") from None

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic (temperature 0)."""
        return self.temperature == 0

    def cache_fields(self) -> dict[str, Any]:
        """The fields that key a sample cache: every field, except the later ones
        (:data:`LATER_FIELDS`) while they hold their defaults."""
        fields = dataclasses.asdict(self)
        defaults = SamplingParams()
        for name in LATER_FIELDS:
            if getattr(self, name) == getattr(defaults, name):
                del fields[name]
        return fields
