"""An experiment: one YAML file in pipelines/ that says what the CALM loop runs on.

Every group of keys is a dataclass whose field docstrings are its manual (``calm-rag run
--describe`` prints them). Unknown keys and wrong types are refused with the dotted key, its
line in the file and what is allowed; ``--set retrieval.k=3`` overrides any key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from calm_rag.errors import InputError
from calm_rag.sampling.default_model import DEFAULT_GENERATOR
from calm_rag.sampling.params import SamplingParams
from calm_rag.training.config import AlignConfig
from calm_rag.voting import VoteConfig
from calm_rag.yaml_config import from_mapping, read_yaml

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class DataConfig:
    """The questions: where they come from and how they are split."""

    source: Literal["bundled", "medqa", "xcsqa"] = "bundled"
    """``bundled`` (the embedded sample sets), ``medqa`` or ``xcsqa`` (files of the release)."""
    dataset: str = "medical"
    """For ``bundled``: ``medical`` or ``commonsense``."""
    path: str | None = None
    """For ``medqa``/``xcsqa``: one file per language, ``{lang}`` in the path standing for the
    language code (``data/xcsqa/{lang}/dev.jsonl``); relative to the experiment file."""
    languages: tuple[str, ...] = ("en", "zh", "fr", "de", "it", "ja")
    """Languages asked; a question is kept only when it exists in all of them."""
    train: int = 12
    """Questions sampled, voted and aligned on (each in every language)."""
    heldout: int = 12
    """Questions kept out of alignment, evaluated before and after."""
    seed: int = 0
    """Shuffles the question ids before the split."""

    def __post_init__(self) -> None:
        if self.train < 1 or self.heldout < 0:
            raise InputError("train must be at least 1 and heldout at least 0", field="train")
        if not self.languages:
            raise InputError("needs at least one language", field="languages")


@dataclass(frozen=True)
class GeneratorConfig:
    """The model that is sampled and aligned, and the backend that samples it."""

    backend: str = "vllm"
    """``vllm`` (offline engine in a child process), ``hf`` (transformers) or ``openai``."""
    model: str = DEFAULT_GENERATOR
    """The default's short name, a local transformers folder or a hub id."""
    options: dict[str, Any] = field(default_factory=dict)
    """Backend options (``batch_size`` for hf, ``base_url`` for openai, ...)."""

    def __post_init__(self) -> None:
        from calm_rag.sampling import SAMPLERS

        backend = SAMPLERS.get(self.backend, field="backend")
        known = {f.name for f in dataclasses.fields(backend.Options)} - {"model"}
        for key in self.options:
            if key not in known:
                raise InputError(f"unknown option for the {self.backend} backend",
                                 field=f"options.{key}", hint=f"use {', '.join(sorted(known))}")


@dataclass(frozen=True)
class AnswersConfig:
    """How the option letter is read from each response."""

    chain: Literal["default", "calm"] = "default"
    """Extractors: ``default`` (strict, never guesses) or ``calm`` (CALM's first character)."""
    fallback: Literal["logprob", "none"] = "logprob"
    """When extraction fails: score the option letters by the model's log-probabilities after
    the response (``logprob``), or leave the sample unanswered (``none``)."""


@dataclass(frozen=True)
class RetrievalSettings:
    """Retrieval-augmented prompts; when enabled every stage runs zero-shot and with RAG."""

    enabled: bool = True
    """Also run the ``rag`` setting (``--no-retrieval`` turns it off for a run)."""
    index: str = "medical-demo"
    """An index name in ``index_dir`` (built from ``<index_dir>/<index>.yaml`` if missing)."""
    index_dir: str = "indexes"
    """Where index specs and built indexes live; relative to the current folder."""
    k: int = 2
    """Passages per question."""
    policy: Literal["native", "pivot", "fused"] = "fused"
    """Query in the question's language, in the pivot (English) version, or both fused."""
    hybrid: bool = False
    """Fuse BM25 keyword rankings with the dense ones."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InputError("must be at least 1", field="k")


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation before and after alignment."""

    splits: tuple[Literal["train", "heldout"], ...] = SPLITS
    """Which questions are evaluated: the aligned (``train``) and the held-out ones."""
    sampling: SamplingParams = SamplingParams(n=1, temperature=0.0, max_tokens=96)
    """Decoding for evaluation (greedy by default, so before/after differ only by the model)."""


@dataclass(frozen=True)
class Experiment:
    """One CALM experiment: data, generator, sampling, retrieval, vote, alignment, evaluation."""

    name: str
    """Names the run folder: ``<runs_dir>/<name>/<timestamp>/``."""
    data: DataConfig = DataConfig()
    generator: GeneratorConfig = GeneratorConfig()
    sampling: SamplingParams = SamplingParams(n=4, temperature=0.8, max_tokens=96)
    answers: AnswersConfig = AnswersConfig()
    retrieval: RetrievalSettings = RetrievalSettings()
    vote: VoteConfig = VoteConfig()
    align: AlignConfig = AlignConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    shard_questions: int = 4
    """Questions per sampling shard: a killed run resumes after the last finished shard."""
    runs_dir: str = "runs"
    """Where run folders and the stage cache (``<runs_dir>/.cache``) go."""
    base_dir: str = field(default=".", metadata={"internal": True})

    @property
    def settings(self) -> tuple[str, ...]:
        return ("zero-shot", "rag") if self.retrieval.enabled else ("zero-shot",)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("base_dir")
        return _plain(data)


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read ``path``, apply ``key=value`` overrides, and check every key and type."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError("an experiment is a mapping of keys", path=path,
                         hint="see pipelines/demo.yaml")
    for override in overrides:
        apply_override(data, override)
    experiment = from_mapping(Experiment, data, path=path, lines=lines)
    return dataclasses.replace(experiment, base_dir=str(path.resolve().parent))


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``data``; the value is read as YAML (``3``, ``true``, ``[en]``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {override!r}: expected KEY=VALUE", field="--set",
                         hint="e.g. --set retrieval.k=3")
    *parents, last = key.strip().split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {override!r}: {'.'.join(parents[:i + 1])} is not a group",
                             field=key)
        node = child
    try:
        node[last] = yaml.safe_load(raw)
    except yaml.YAMLError:
        node[last] = raw


def describe(cls: type = Experiment, prefix: str = "") -> list[str]:
    """The manual: one line per key with its type, default and documentation."""
    import typing

    from calm_rag.yaml_config import field_docs

    docs, hints, lines = field_docs(cls), typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key, hint = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(hint):
            lines.append(f"{key}: {(hint.__doc__ or '').strip().splitlines()[0]}")
            lines += describe(hint, f"{key}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f"default {_plain(f.default)!r}"
        elif f.default_factory is not dataclasses.MISSING:
            default = f"default {_plain(f.default_factory())!r}"
        else:
            default = "required"
        kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        doc = docs.get(f.name) or f.metadata.get("help", "")
        lines.append(f"{key} ({kind}, {default}): {doc}")
    return lines


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so the resolved config reads back as YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
