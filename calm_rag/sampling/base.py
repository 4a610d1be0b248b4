"""The sampler interface and the registry that lets a config choose a backend by name.

A backend says what it can do in class attributes, read from the registered class without
building it (``SAMPLERS.get("hf").loads_adapters``): the pipeline asks these, never a
backend's name, so a plugin backend declares its own and is treated the same way.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from calm_rag.registries import SAMPLERS
from calm_rag.sampling.params import SamplingParams

if TYPE_CHECKING:
    from calm_rag.sampling.endings import AnswerEnding

Messages = list[dict[str, str]]
"""One chat: ``[{"role": "user", "content": ...}, ...]``."""


class Sampler(ABC):
    """A generator backend: chats in, ``n`` sampled texts per chat out.

    ``Sampler(model, options)``: ``model`` is the model to sample (``generator.model``: a
    short name, folder or hub id, or the name a server serves), ``options`` the backend's
    ``Options`` dataclass (``generator.options``). A backend receives every prompt of a stage
    in one call, so it can batch across questions and languages as it sees fit (mini-batches,
    continuous batching, a remote queue).
    """

    Options: ClassVar[type]
    """The backend's options dataclass (``generator.options`` when this backend is chosen)."""
    default_model: ClassVar[str | None] = None
    """The model sampled when none is given (None: the backend finds one, e.g. a server's)."""
    loads_adapters: ClassVar[bool] = False
    """Whether it samples a PEFT LoRA adapter on top of the model: its ``Options`` then have an
    ``adapter`` field, which the pipeline sets after training. A backend that cannot is given
    a merged model instead (``align.merge`` is switched on)."""
    reads_local_weights: ClassVar[bool] = True
    """Whether ``model`` names weights on this machine (the default's short name, a folder or
    a cached hub id), which calm_rag can fingerprint, score options with and train. False for
    a served model: its name is the server's, known here only by that name."""
    forces_answers: ClassVar[bool] = False
    """Whether :meth:`generate_forced` can end every response with the answer marker and a
    letter (``sampling.forced_answer``)."""
    options_not_in_key: ClassVar[tuple[str, ...]] = ()
    """Options that cannot change a text (how many engines share the prompts): left out of
    the sample stage's cache key."""

    @classmethod
    def dtype_of(cls, options: Any) -> str | None:
        """The dtype it samples in as configured (``auto`` included; the caller resolves it),
        None when the weights are not loaded here (a served model)."""
        return None

    @classmethod
    def check_devices(cls, options: Any) -> None:
        """Refuse ``options`` that the devices of this machine cannot run (the experiment's
        loader asks, so a run fails at load, not once the engine starts); none by default."""
        return None  # a backend that asks for no devices fits any machine

    @classmethod
    def placement(cls, options: Any) -> tuple[str, str | None]:
        """Where it puts the weights, ``(device, device_map)``: the log-prob scorer follows
        it. By default the first GPU when torch sees one."""
        return "auto", None

    def __init__(self, model: str | os.PathLike[str] | None = None, options: Any = None
                 ) -> None:
        """Keep the model and the options (the backend's defaults when None); a backend loads
        or connects in its own ``__init__`` or on first use."""
        if isinstance(model, self.Options) and options is None:
            # Samplers were built as Backend(options) before the model left the options.
            warnings.warn(f"{type(self).__name__}(options) is deprecated: pass "
                          f"{type(self).__name__}(model, options) or options=...",
                          DeprecationWarning, stacklevel=3)
            model, options = None, model
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"{type(self).__name__}(model, options): the model is a name or a "
                            f"folder, got {type(model).__name__} (options come second)")
        if options is None:
            options = self.Options()
        elif not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, got "
                            f"{type(options).__name__}")
        self.model_name: str | None = model if model is not None else self.default_model
        self.options = options

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A backend that says it loads adapters must have an option to set."""
        super().__init_subclass__(**kwargs)
        options = cls.__dict__.get("Options")
        if cls.loads_adapters and options is not None and "adapter" not in {
                f.name for f in dataclasses.fields(options)}:
            raise TypeError(f"{cls.__name__} loads adapters but {options.__name__} has no "
                            "adapter field")

    @abstractmethod
    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        """``params.n`` response texts for each prompt, in prompt order."""

    def close(self) -> None:
        """Release what the backend holds (an engine's process, its memory); nothing by
        default."""
        return None  # a backend that holds nothing releases nothing

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate_forced(self, prompts: list[Messages], params: SamplingParams,
                        endings: list[AnswerEnding] | None) -> list[list[str]]:
        """As ``generate``; with ``params.forced_answer``, each response ends as its ending
        says. Only a backend with ``forces_answers`` implements it."""
        raise NotImplementedError(f"{type(self).__name__} cannot force the answer format")


__all__ = ["SAMPLERS", "Messages", "Sampler", "make_sampler", "sampler_class"]


def sampler_class(name: str) -> type[Sampler]:
    """The registered backend ``name``, not built: ask it what it can do."""
    cls: type[Sampler] = SAMPLERS.get(name, field="generator.backend")
    return cls


def make_sampler(name: str, options: Mapping[str, Any] | Any = None, *,
                 model: str | os.PathLike[str] | None = None) -> Sampler:
    """Build the backend ``name`` on ``model`` from its options (a mapping checked by the
    config loader, or the backend's ``Options`` dataclass); errors name the option.

    >>> make_sampler("hf", {"batch_size": 4}, model="smollm2-135m-instruct")
    """
    from calm_rag.config import from_mapping

    cls = sampler_class(name)
    if isinstance(options, Mapping) and "model" in options:
        model = _model_from_options(dict(options), model)
        options = {k: v for k, v in options.items() if k != "model"}
    if not isinstance(options, cls.Options):
        options = from_mapping(cls.Options, options or {})
    return cls(model, options)


def _model_from_options(options: dict[str, Any], model: object) -> str | None:
    """The model of an options mapping written before ``model=`` (still accepted, with a
    deprecation warning); given in both places, it is refused rather than one of them chosen."""
    from calm_rag.errors import InputError

    if model is not None:
        raise InputError("the model is given twice, as model= and in the options",
                         field="model", hint="pass it as model= only")
    warnings.warn("make_sampler(name, {'model': ...}) is deprecated: pass model=... "
                  "(the options no longer hold the model)", DeprecationWarning, stacklevel=3)
    given = options["model"]
    return given if given is None else str(given)
