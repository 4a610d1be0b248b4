"""The sampler interface and the registry that lets a config choose a backend by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from calm_rag.registries import SAMPLERS
from calm_rag.sampling.params import SamplingParams

Messages = list[dict[str, str]]
"""One chat: ``[{"role": "user", "content": ...}, ...]``."""


class Sampler(ABC):
    """A generator backend: chats in, ``n`` sampled texts per chat out.

    A backend receives every prompt of a stage in one call, so it can batch across questions and
    languages as it sees fit (mini-batches, continuous batching, a remote queue).
    """

    Options: ClassVar[type]
    """The backend's options dataclass (``generator.options`` when this backend is chosen)."""

    @abstractmethod
    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        """``params.n`` response texts for each prompt, in prompt order."""


__all__ = ["SAMPLERS", "Messages", "Sampler", "make_sampler"]


def make_sampler(name: str, options: dict[str, Any] | Any = None) -> Sampler:
    """Build the backend ``name`` from its options (a mapping checked by the config loader,
    or the backend's ``Options`` dataclass); errors name the option."""
    from calm_rag.config import from_mapping

    cls = SAMPLERS.get(name, field="generator.backend")
    if not isinstance(options, cls.Options):
        options = from_mapping(cls.Options, options or {})
    return cls(options)
