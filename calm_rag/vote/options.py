"""What a vote policy is as registered: how it scores, and its options (``vote.options``).

A policy declares its parameters as an ``Options`` dataclass, chosen by ``vote.policy`` as a
sampler backend's are by ``generator.backend``: ``vote: {policy: weighted, options: {weights:
{en: 2}}}``. The loader checks the keys against the chosen policy's dataclass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from calm_rag.config import from_mapping, non_defaults
from calm_rag.errors import InputError
from calm_rag.languages import normalize_code
from calm_rag.registries import VOTE_POLICIES, VotePolicyFn

if TYPE_CHECKING:
    from calm_rag.records import Sample
    from calm_rag.vote.voting import PolicyResult, VoteConfig


@dataclass(frozen=True)
class NoOptions:
    """This policy takes no options."""


@dataclass(frozen=True)
class WeightsOptions:
    """Per-language weights (the options of a policy that weighs languages).

    A plugin policy's options may extend it; ``--weights`` sets them."""

    weights: dict[str, float] = field(default_factory=dict)
    """Each language's weight (``{en: 2, zh: 1}``, at least 0); a language not listed
    weighs 1."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", check_weights(self.weights))


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` keyed by normalized language codes, each a finite number >= 0."""
    checked: dict[str, float] = {}
    for code, weight in weights.items():
        lang = language_code(code, "weights")
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight) or weight < 0:
            raise InputError(f"the weight of {code!r} must be a finite number >= 0, "
                             f"got {weight!r}", field="weights")
        if lang in checked:
            raise InputError(f"names {lang!r} twice", field="weights")
        checked[lang] = float(weight)
    return checked


def language_code(code: str, field: str) -> str:
    """``code`` normalized; an unknown code is an InputError on ``field``."""
    try:
        return normalize_code(code)
    except InputError as err:
        raise InputError(err.message, field=field, hint=err.hint) from None


@dataclass(frozen=True)
class VotePolicy:
    """A vote policy as registered: how it scores, and the options it takes.

    A plain function registered in ``VOTE_POLICIES`` is a policy without options."""

    score: VotePolicyFn
    Options: type = NoOptions
    """Its options dataclass (``vote.options`` when this policy is chosen)."""
    reads_weights: bool = False
    """Whether it reads per-language weights: set from ``Options`` (a ``WeightsOptions``);
    ``VotePolicy(fn, reads_weights=True)``, written before the options, still works."""

    def __post_init__(self) -> None:
        if self.reads_weights and self.Options is NoOptions:
            object.__setattr__(self, "Options", WeightsOptions)
        if not (isinstance(self.Options, type) and dataclasses.is_dataclass(self.Options)):
            raise TypeError(f"a vote policy's Options must be a dataclass, got {self.Options!r}")
        object.__setattr__(self, "reads_weights", issubclass(self.Options, WeightsOptions))

    @property
    def __wrapped__(self) -> VotePolicyFn:
        """The scoring function: where the policy was defined (a plugin's module)."""
        return self.score

    def __call__(self, questions: list[list[Sample]], config: VoteConfig) -> PolicyResult:
        return self.score(questions, config)


def vote_policy(name: str, field: str = "vote.policy") -> VotePolicy:
    """The registered vote policy ``name``, with what it can do."""
    item = VOTE_POLICIES.get(name, field)
    return item if isinstance(item, VotePolicy) else VotePolicy(item)


def policy_option_types() -> dict[str, type]:
    """Each registered policy's ``Options`` (what ``--describe`` lists under ``vote.options``)."""
    return {name: vote_policy(name).Options for name in VOTE_POLICIES}


def policy_options(policy: str, options: Any) -> Any:
    """The ``Options`` of vote policy ``policy`` from ``options`` (a mapping, an instance,
    or None for the defaults); errors name ``options.KEY``."""
    cls = vote_policy(policy, "policy").Options
    _check_shape(options)
    if isinstance(options, Mapping):
        unknown = [key for key in options if key not in _option_names(cls)]
        if unknown:
            raise _unknown_option(policy, str(unknown[0]))
        return from_mapping(cls, dict(options), prefix="options")
    if options is None or (type(options) in policy_option_types().values()
                           and not non_defaults(options)):
        return cls()  # none given, or another policy's defaults (a replaced policy)
    if not isinstance(options, cls):
        raise InputError(f"expected {cls.__name__} (the options of policy {policy!r}), got "
                         f"{type(options).__name__}", field="options")
    return options


def with_weights(options: Any, weights: Any) -> dict[str, Any]:
    """``options`` as a mapping with the deprecated ``vote.weights`` added (checked when the
    policy's options are built); weights given in both places and unequal are refused."""
    _check_shape(options)
    given = dict(options) if isinstance(options, Mapping) else (
        {} if options is None else non_defaults(options))
    if given.get("weights") not in (None, {}, weights):
        raise InputError("given twice, as vote.weights and vote.options.weights",
                         field="options.weights", hint="keep vote.options.weights only")
    return given | {"weights": weights}


def _check_shape(options: Any) -> None:
    """Options are a mapping of keys (from YAML), an options dataclass, or None."""
    if not (options is None or isinstance(options, Mapping) or dataclasses.is_dataclass(options)):
        raise InputError(f"expected a mapping of keys, got {type(options).__name__}",
                         field="options")


def _option_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_option(policy: str, key: str) -> InputError:
    """An option ``policy`` lacks: the close names, what it takes, which policies take it."""
    import difflib

    names = _option_names(vote_policy(policy).Options)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    takers = [name for name in VOTE_POLICIES if key in _option_names(vote_policy(name).Options)]
    if close:
        hint = f"did you mean {', '.join(close)}?"
    else:
        hint = f"policy {policy!r} takes {', '.join(names) if names else 'no options'}"
        if takers:
            hint += f"; {key!r} is an option of policy {' and '.join(takers)}"
    return InputError(f"unknown option of policy {policy!r}", field=f"options.{key}", hint=hint)
