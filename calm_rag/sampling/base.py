"""The sampler interface and the registry that lets a config choose a backend by name."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from calm_rag.errors import InputError
from calm_rag.registry import Registry
from calm_rag.sampling.params import SamplingParams

Messages = list[dict[str, str]]
"""One chat: ``[{"role": "user", "content": ...}, ...]``."""


class Sampler(ABC):
    """A generator backend: chats in, ``n`` sampled texts per chat out.

    A backend receives every prompt of a stage in one call, so it can batch across questions and
    languages as it sees fit (mini-batches, continuous batching, a remote queue).
    """

    Options: ClassVar[type]
    """The backend's options dataclass (the ``sampler:`` block of a config)."""

    @abstractmethod
    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        """``params.n`` response texts for each prompt, in prompt order."""


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")
"""Backends by name (``hf``, ...): ``SAMPLERS.get(name)``."""


def make_sampler(name: str, options: dict[str, Any] | None = None) -> Sampler:
    """Build the backend ``name`` from a config mapping; unknown keys name themselves."""
    cls = SAMPLERS.get(name, field="sampler.backend")
    known = {f.name for f in dataclasses.fields(cls.Options)}
    for key in options or {}:
        if key not in known:
            raise InputError(f"unknown option for the {name} sampler",
                             field=f"sampler.{key}", hint=f"use {', '.join(sorted(known))}")
    return cls(cls.Options(**(options or {})))
