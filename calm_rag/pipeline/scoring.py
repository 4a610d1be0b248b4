"""The scoring model: the weights, adapter, device and dtype that score options.

Two stages score options with the model's log-probabilities: the answers fallback (a response
whose letter extraction found nothing) and the option scores RankC compares. Both must score
with the model that was sampled: after alignment that is the base model *with the trained
adapter* when the adapter is not merged, on the device the ``hf`` sampler was told to use. One
:class:`ScoringModel` says which model that is (and keys the stages' caches); one
:class:`Scorers` holds the loaded scorer, one in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calm_rag.pipeline.model_ref import ModelRef


@dataclass(frozen=True)
class ScoringModel:
    """What scores options: ``model`` (base and adapter), where, in which dtype."""

    model: ModelRef
    device: str = "auto"
    device_map: str | None = None
    dtype: str = "float32"

    @classmethod
    def of(cls, experiment: Any, model: ModelRef) -> ScoringModel:
        """The scoring model for ``model`` in ``experiment``: the ``hf`` sampler's ``device``
        and ``device_map`` (another backend's options have none: the first GPU when torch
        sees one), and the dtype the hardware multiplies fastest in."""
        generator = experiment.generator
        device, device_map = generator.backend_class.placement(generator.options)
        return cls(model, device, device_map, scoring_dtype(device, device_map))

    @property
    def key(self) -> tuple[str, str]:
        """What changes the scores: the weights (base and adapter) and the dtype."""
        return self.model.fingerprint, self.dtype

    def load(self, progress: bool = False) -> Any:
        """A :class:`~calm_rag.sampling.letter_scores.LetterScorer` on this model."""
        from calm_rag.sampling.letter_scores import LetterScorer

        return LetterScorer.load(self.model.path, dtype=self.dtype, device=self.device,
                                 device_map=self.device_map, adapter=self.model.adapter,
                                 progress=progress)


def scoring_dtype(device: str = "auto", device_map: str | None = None) -> str:
    """bfloat16 where the hardware multiplies in it (a GPU, or a CPU with AMX/AVX512-BF16),
    float32 elsewhere (bench/scoring.py measures the difference)."""
    from calm_rag.runtime.hardware import auto_precision, resolve_device

    if device_map is not None or device == "auto":
        return auto_precision().dtype  # on the GPU when torch sees one
    gpu = resolve_device(device, field="generator.options.device") != "cpu"
    return auto_precision(gpu=gpu).dtype


@dataclass
class Scorers:
    """The loaded scorer of one scoring model at a time (a second one replaces the first)."""

    progress: bool = False
    _loaded: dict[ScoringModel, Any] = field(default_factory=dict)

    def get(self, scoring: ScoringModel) -> Any:
        if scoring not in self._loaded:
            self._loaded.clear()
            self._loaded[scoring] = scoring.load(self.progress)
        return self._loaded[scoring]

    def release(self) -> None:
        """Free the scorer's memory (before training loads its own copy of the model)."""
        self._loaded.clear()
