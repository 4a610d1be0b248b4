"""The generator as the pipeline sees it: a model reference and a sampler started on demand."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.experiment import GeneratorConfig
from calm_rag.models import DEFAULT_GENERATOR, check_model_reference, resolve_generator
from calm_rag.provenance import model_fingerprint


@dataclass(frozen=True)
class ModelRef:
    """A model to sample or train: where it is, and a fingerprint of its content (of the base
    and the adapter together, when there is one)."""

    path: str
    fingerprint: str
    adapter: str | None = None
    """A PEFT LoRA adapter folder applied on top of ``path`` (not merged into a copy)."""

    @classmethod
    def resolve(cls, name_or_path: str, backend: str, adapter: str | None = None) -> ModelRef:
        """The generator named in the config: the default is prepared on first use; a local
        folder is fingerprinted by its files; a hub id (or a server's model) by its name.
        ``adapter`` (``generator.options.adapter``) adds its folder's files (or its name, for a
        LoRA module a server serves under that name)."""
        if backend == "openai":
            base = cls(name_or_path, f"served:{name_or_path}")
        else:
            check_model_reference(name_or_path, field="generator.model",
                                  defaults=(DEFAULT_GENERATOR,))
            path = resolve_generator(name_or_path)
            base = cls(path, model_fingerprint(path))
        if adapter is None:
            return base
        from calm_rag.models.loading import adapter_config

        if backend != "openai" or Path(adapter).is_dir():
            adapter_config(adapter, field="generator.options.adapter")
        return cls(base.path, f"{base.fingerprint}+adapter:{model_fingerprint(adapter)}",
                   adapter)


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
            changes = {"model": self.model.path, "progress": self.progress and given.progress}
            # The model's adapter replaces the options': the pipeline's model is the one to
            # sample (ModelRef.resolve took the options' adapter into the first one).
            if any(f.name == "adapter" for f in dataclasses.fields(given)):
                changes["adapter"] = self.model.adapter
            elif self.model.adapter is not None:
                raise InputError(f"the {self.generator.backend} backend cannot sample a LoRA "
                                 "adapter (its options have no adapter)",
                                 field="generator.backend",
                                 hint="set align.merge: true to sample a merged model")
            options = dataclasses.replace(given, **changes)
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
