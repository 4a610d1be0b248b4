"""The generator as the pipeline sees it: a model reference and a sampler started on demand."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.experiment import GeneratorConfig
from calm_rag.models import DEFAULT_GENERATOR, check_model_reference, resolve_generator
from calm_rag.models.references import check_hub_available
from calm_rag.runtime.provenance import model_fingerprint
from calm_rag.sampling.base import Sampler, make_sampler, sampler_class


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
        local = sampler_class(backend).reads_local_weights
        if not local:  # known here by its name only
            base = cls(name_or_path, f"served:{name_or_path}")
        else:
            check_model_reference(name_or_path, field="generator.model",
                                  defaults=(DEFAULT_GENERATOR,))
            check_hub_available(name_or_path, field="generator.model")
            path = resolve_generator(name_or_path)
            base = cls(path, model_fingerprint(path))
        if adapter is None:
            return base
        from calm_rag.models.loading import adapter_config

        if local or Path(adapter).is_dir():
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
        self._sampler: Sampler | None = None

    def get(self) -> Sampler:
        if self._sampler is None:
            self._sampler = make_sampler(self.generator.backend, self._options(),
                                         model=self.model.path)
        return self._sampler

    def _options(self) -> Any:
        """The config's options, with the progress bar as the run wants it and the model's
        adapter (ModelRef.resolve took the options' own into the first model, so after
        training this is the trained one)."""
        given = self.generator.options
        changes: dict[str, Any] = {}
        if "progress" in {f.name for f in dataclasses.fields(given)}:
            changes["progress"] = self.progress and given.progress
        if self.generator.backend_class.loads_adapters:
            changes["adapter"] = self.model.adapter
        elif self.model.adapter is not None:
            raise InputError(f"the {self.generator.backend} backend cannot sample a LoRA "
                             "adapter (it does not load adapters)", field="generator.backend",
                             hint="set align.merge: true to sample a merged model")
        return dataclasses.replace(given, **changes)

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
        self._sampler = None

    def __enter__(self) -> LazySampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
