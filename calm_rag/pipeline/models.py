"""The generator as the pipeline sees it: a model reference and a sampler started on demand."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from calm_rag.experiment import GeneratorConfig
from calm_rag.models import DEFAULT_GENERATOR, check_model_reference, resolve_generator
from calm_rag.provenance import model_fingerprint


@dataclass(frozen=True)
class ModelRef:
    """A model to sample or train: where it is, and a fingerprint of its content."""

    path: str
    fingerprint: str
    adapter: str | None = None
    """A LoRA adapter folder to apply on top of ``path`` (a round trained without merging)."""

    @classmethod
    def resolve(cls, name_or_path: str, backend: str) -> ModelRef:
        """The generator named in the config: the default is prepared on first use; a local
        folder is fingerprinted by its files; a hub id (or a server's model) by its name."""
        if backend == "openai":
            return cls(name_or_path, f"served:{name_or_path}")
        check_model_reference(name_or_path, field="generator.model",
                              defaults=(DEFAULT_GENERATOR,))
        path = resolve_generator(name_or_path)
        return cls(path, model_fingerprint(path))


class LazySampler:
    """Creates the backend on the first ``get()`` (a cached run never starts an engine) and
    stops it on exit, so a vLLM engine's memory is back before training starts."""

    def __init__(self, generator: GeneratorConfig, model: ModelRef, progress: bool = False
                 ) -> None:
        self.generator = generator
        self.model = model
        self.progress = progress
        self._sampler: Any = None

    def get(self) -> Any:
        from calm_rag.sampling import make_sampler

        if self._sampler is None:
            given = self.generator.options
            options = dataclasses.replace(given, model=self.model.path,
                                          progress=self.progress and given.progress)
            self._sampler = make_sampler(self.generator.backend, options)
        return self._sampler

    def close(self) -> None:
        close = getattr(self._sampler, "close", None)
        if close is not None:
            close()
        self._sampler = None

    def __enter__(self) -> LazySampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
