"""Every kind of pluggable part, declared in one place.

Each registry imports the modules holding calm_rag's own parts on its first lookup. A new part
is one decorated function or class anywhere (a plugin module named in an experiment's
``plugins:`` key, a notebook cell)::

    from calm_rag.registries import METRICS

    @METRICS.register("answer_count")
    def answer_count(rows, langs): ...

``calm-rag run --describe`` lists the names of every registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from calm_rag.registry import Registry

if TYPE_CHECKING:  # the parts' types, for the type checker only (no import cycle at run time)
    from calm_rag.records import Question, Sample
    from calm_rag.sampling.base import Sampler
    from calm_rag.training.methods import AlignMethod
    from calm_rag.vote.voting import PolicyResult, VoteConfig

Extractor = Callable[[str, Any, Mapping[str, str]], Any]  # (text, Language, options)
TiePolicy = Callable[[list[str], list["Sample"], "VoteConfig"], str | None]
VotePolicyFn = Callable[[list[list["Sample"]], "VoteConfig"], "PolicyResult"]
ChosenPick = Callable[[list["Sample"], list["Sample"], str, "VoteConfig"], list["Sample"]]
QuestionSource = Callable[[Any, Any], list["Question"]]
CorpusReader = Callable[[Any, str | None], Iterable[Any]]
QueryPolicy = Callable[[str, str | None], Sequence[str]]
MetricFn = Callable[[list[dict], list[str]], Any]

SAMPLERS: Registry[type[Sampler]] = Registry(
    "sampler backend", base="calm_rag.sampling.base:Sampler",
    modules=("calm_rag.sampling.hf", "calm_rag.sampling.openai_backend",
             "calm_rag.sampling.vllm_backend"))
"""Generator backends: a ``Sampler`` subclass with an ``Options`` dataclass
(``generator.backend``)."""

EXTRACTORS: Registry[Extractor] = Registry("extractor", arity=3, modules=("calm_rag.vote.answers",))
"""``fn(text, language, options) -> label | None | AMBIGUOUS``: reads an answer."""

EXTRACTOR_CHAINS: Registry[tuple[str, ...]] = Registry("extractor chain", base=tuple,
                                           modules=("calm_rag.vote.answers",))
"""Extractor names tried in order (``answers.chain``)."""

TIE_POLICIES: Registry[TiePolicy] = Registry("tie policy", arity=3,
                                             modules=("calm_rag.vote.voting",))
"""``fn(tied_answers, parsed_samples, vote_config) -> answer | None`` (``vote.tie``)."""

VOTE_POLICIES: Registry[VotePolicyFn] = Registry("vote policy", arity=2,
                                        modules=("calm_rag.vote.policies",))
"""``fn(questions_samples, vote_config) -> PolicyResult``: scores each question's answers,
seeing a setting's questions together (``vote.policy``)."""

VOTE_PRESETS: Registry[VoteConfig] = Registry("vote preset", base="calm_rag.vote.voting:VoteConfig",
                                       modules=("calm_rag.vote.presets",))
"""Whole vote configurations by name (``calm-rag vote --policy``)."""

CHOSEN_FALLBACKS: Registry[ChosenPick] = Registry("chosen fallback", arity=4,
                                           modules=("calm_rag.vote.pairs",))
"""``fn(language_samples, all_samples, majority, vote_config) -> chosen candidates`` for a
language with no response agreeing with the majority (``vote.chosen_fallback``)."""

QUESTION_SOURCES: Registry[QuestionSource] = Registry("dataset", arity=2,
                                           modules=("calm_rag.datasets.sources",))
"""``fn(data_config, base_dir) -> questions in every language of data.languages``
(``data.source``)."""

CORPUS_READERS: Registry[CorpusReader] = Registry("corpus type", arity=2,
                                         modules=("calm_rag.retrieval.corpora",))
"""``fn(path, lang) -> documents`` of one corpus source (an index spec's ``corpus[].type``);
``hub``'s first argument is a :class:`~calm_rag.retrieval.hub_corpus.HubCorpus`, not a path."""

QUERY_POLICIES: Registry[QueryPolicy] = Registry("retrieval policy", arity=2,
                                         modules=("calm_rag.retrieval.policies",))
"""``fn(query, pivot_query) -> texts searched`` (``retrieval.policy``)."""

ALIGN_METHODS: Registry[type[AlignMethod]] = Registry(
    "align method", base="calm_rag.training.methods:AlignMethod",
    modules=("calm_rag.training.methods",))
"""How the policy is trained on the vote (``align.method``)."""

METRICS: Registry[MetricFn] = Registry("metric", arity=2, modules=(
    "calm_rag.evaluation.metrics", "calm_rag.evaluation.agreement"))
"""``fn(per_question_rows, languages) -> JSON value``, computed per setting
(``evaluation.metrics``)."""

ALL: dict[str, Registry[Any]] = {
    registry.kind: registry for registry in (
        SAMPLERS, EXTRACTORS, EXTRACTOR_CHAINS, TIE_POLICIES, VOTE_POLICIES, VOTE_PRESETS,
        CHOSEN_FALLBACKS, QUESTION_SOURCES, CORPUS_READERS, QUERY_POLICIES, ALIGN_METHODS, METRICS)
}


def describe_registries() -> list[str]:
    """One line per registry: its kind and the names registered."""
    return [f"{kind}: {', '.join(registry)}" for kind, registry in ALL.items()]
