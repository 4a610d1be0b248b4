"""An experiment: one YAML file in pipelines/ that says what the CALM loop runs on.

Every group of keys is a dataclass whose field docstrings are its manual (``calm-rag run
--describe`` prints them). The one loader (:mod:`calm_rag.config`) refuses unknown keys, wrong
types and values out of range with the dotted key, its line in the file and what is allowed;
``--set retrieval.k=3`` overrides any key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calm_rag.config import (
    INTERNAL,
    at_least,
    check_seed,
    from_mapping,
    non_defaults,
    one_of,
    parse_yaml,
    plain,
    read_yaml,
    typed_by,
)
from calm_rag.config import (
    describe as describe_config,
)
from calm_rag.datasets.entry import DatasetEntry
from calm_rag.errors import InputError
from calm_rag.io.run_names import check_run_name
from calm_rag.models import DEFAULT_GENERATOR, check_model_reference
from calm_rag.plugins import import_plugins
from calm_rag.registries import (
    EXTRACTOR_CHAINS,
    METRICS,
    QUERY_POLICIES,
    QUESTION_SOURCES,
    SAMPLERS,
    describe_registries,
)
from calm_rag.retrieval.fusion import FusionConfig
from calm_rag.retrieval.rerank import RerankConfig
from calm_rag.sampling.base import Sampler, sampler_class
from calm_rag.sampling.params import SamplingParams
from calm_rag.training.config import AlignConfig
from calm_rag.vote.voting import VoteConfig

SPLITS: tuple[Literal["train", "heldout"], ...] = ("train", "heldout")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def bundled_sets(source: str, key: str = "source") -> tuple[str, ...] | None:
    """The sets ``dataset`` may name when ``source`` reads sets of its own (the bundled ones),
    else None (it reads ``path``); an unknown source is an error naming ``key``."""
    from calm_rag.datasets.bundled import BundledSource

    found = QUESTION_SOURCES.get(source, field=key)
    return found.sets if isinstance(found, BundledSource) else None


@dataclass(frozen=True)
class EvalDataConfig:
    """A second set of questions, evaluated in place of a held-out slice of the first: CALM's
    protocol, aligning on the training questions and evaluating on the test questions. The
    languages, ``misaligned`` and ``seed`` are those of ``data``."""

    source: str = "bundled"
    """A registered dataset, as ``data.source`` (or the name of ``entry``)."""
    dataset: str = "medical"
    """For ``bundled``: ``medical`` or ``commonsense``."""
    path: str | None = None
    """Where the files are, relative to the experiment file (as ``data.path``)."""
    entry: DatasetEntry | None = None
    """A dataset written in this file instead of a registered one (as ``data.entry``)."""

    def __post_init__(self) -> None:
        if self.entry is None and (named := bundled_sets(self.source)) is not None:
            one_of("dataset", self.dataset, named)


@dataclass(frozen=True)
class DataConfig:
    """The questions: where they come from and how they are split."""

    source: str = "bundled"
    """A registered dataset (``calm-rag run --describe`` lists them): ``bundled`` (the
    embedded sample sets); local releases ``xcsqa`` (XCSR's X-CSQA folder), ``medqa``
    (MedQA-format files, ``{lang}`` in ``path``), ``medqa-release`` and ``medqa-taiwan``
    (MedQA's data_clean folder), ``calm-xcsqa`` and ``calm-medqa`` (CALM's released test
    files); the hub's ``xcsqa-hub``, ``medqa-gbaker``, ``medqa-bigbio``, ``mmmlu`` and
    ``global-mmlu``; or the name of ``entry`` when that is given."""
    dataset: str = "medical"
    """For ``bundled``: ``medical`` or ``commonsense``."""
    path: str | None = None
    """Where the files are, relative to the experiment file: a local release's folder (the
    entry knows its layout), or a template with ``{lang}`` standing for the release's language
    code (``data/medqa/{lang}/test.jsonl``). For a hub source, a local copy read instead of the
    hub: a ``save_to_disk`` folder, parquet/jsonl files or a clone of the repository
    (``{lang}`` in it for one per language)."""
    entry: DatasetEntry | None = None
    """A dataset written in this file instead of a registered one (``source`` then only names
    it): ``loader``, ``path`` or ``name``/``config``/``split``/``revision``, the columns ``id``,
    ``stem``, ``options``, ``answer``, the language ``codes`` and how languages line up
    (``parallel``); every key is listed under ``data.entry`` below."""
    languages: tuple[str, ...] = ("en", "zh", "fr", "de", "it", "ja")
    """Languages asked (ISO 639-1 codes, each once); a question is kept only when it exists in
    all of them."""
    misaligned: Literal["stop", "drop"] = "stop"
    """A question whose languages do not line up (another gold answer or option count, a
    shifted row, a missing row): ``stop`` with the file and the first such row, or ``drop``
    those questions and say how many and from where (``calm-rag run --check`` shows it)."""
    eval: EvalDataConfig | None = None
    """The questions evaluated, when they are another set than those aligned on (CALM's test
    questions beside its training questions): ``source``, ``dataset``, ``path``, ``entry`` as
    above. Then ``train`` questions are drawn from the set above and ``heldout`` ones from this
    one; unset (the default), both are drawn from the one set above, without overlap."""
    train: int = 12
    """Questions sampled, voted and aligned on (each in every language), 1 or more."""
    heldout: int = 12
    """Questions kept out of alignment, evaluated before and after, 0 or more (with ``eval``:
    the questions of that set evaluated)."""
    seed: int = 0
    """Shuffles the question ids before the split (each set's own, with ``eval``)."""
    language_sets: tuple[tuple[str, ...], ...] = ()
    """Run the experiment once per set of languages (``[[en, zh], [en, zh, fr]]``), each set
    in turn standing for ``languages``, as one grid: samples are cached per language, so a
    set reuses what another sampled, and the grid's ``report.md`` compares the sets'
    consistency, accuracy, RankC and vote ties. Empty (the default): one run on
    ``languages``."""
    sample_per_language: bool = False
    """Sample (and score) each language as a cached stage of its own, so that a run on
    another set of languages reuses them; fewer prompts per engine call, so a little slower.
    The runs of ``language_sets`` always do."""

    def chosen_set(self) -> tuple[str, ...] | None:
        """The sets ``data.dataset`` may name when the source reads sets of its own (the
        bundled ones), else None (it reads ``data.path``)."""
        return bundled_sets(self.source)

    def eval_data(self) -> DataConfig | None:
        """The evaluation set (``eval``) as a data block of its own, loaded and checked as
        this one is (same languages, ``misaligned`` and ``seed``); None without ``eval``."""
        if self.eval is None:
            return None
        return dataclasses.replace(self, source=self.eval.source, dataset=self.eval.dataset,
                                   path=self.eval.path, entry=self.eval.entry, eval=None)

    def protocol(self) -> str:
        """One line for a report's header: what was aligned on and what evaluated."""
        if self.eval is None:
            return (f"train and held-out questions are disjoint slices of one set "
                    f"({self.source} {self.input_name}, seed {self.seed}): no separate "
                    "training set (data.eval unset)")
        evaluated = self.eval_data()
        assert evaluated is not None
        return (f"aligned on {self.source} {self.input_name}, evaluated on "
                f"{evaluated.source} {evaluated.input_name} (data.eval)")

    @property
    def input_name(self) -> str:
        """What the questions are read from: the bundled set's name, or ``data.path``."""
        if self.entry is None and self.chosen_set() is not None:
            return self.dataset
        return str(self.path)

    def __post_init__(self) -> None:
        if self.entry is None and (named := self.chosen_set()) is not None:
            one_of("dataset", self.dataset, named)  # chosen_set() refused an unknown source
        at_least(self, 1, "train")
        at_least(self, 0, "heldout")
        check_seed(self, "seed")
        object.__setattr__(self, "languages", language_codes(self.languages, "languages"))
        sets = tuple(language_codes(s, f"language_sets[{i}]")
                     for i, s in enumerate(self.language_sets))
        _refuse_same_sets(sets)
        object.__setattr__(self, "language_sets", sets)

    def check_offered(self) -> None:
        """Languages a source says it lacks fail at load, by their key, not once it is read."""
        for source, entry in ((self.source, self.entry),
                              *([(self.eval.source, self.eval.entry)] if self.eval else [])):
            _check_offered(source, entry, "data.languages", self.languages)
            for i, langs in enumerate(self.language_sets):
                _check_offered(source, entry, f"data.language_sets[{i}]", langs)


def _refuse_same_sets(sets: tuple[tuple[str, ...], ...]) -> None:
    """Two sets of the same languages in another order vote alike: the grid would run one
    set twice and compare it with itself."""
    seen: dict[frozenset[str], int] = {}
    for i, langs in enumerate(sets):
        first = seen.setdefault(frozenset(langs), i)
        if first != i:
            how = "" if sets[first] == langs else " in another order"
            raise InputError(f"lists a set twice: [{', '.join(langs)}] is "
                             f"language_sets[{first}]{how}", field=f"language_sets[{i}]",
                             hint="name each set of languages once")


def _check_offered(source: str, entry: DatasetEntry | None, key: str, langs: tuple[str, ...]
                   ) -> None:
    """Languages the source says it lacks fail at load, naming ``key``, not once it is read."""
    from calm_rag.datasets.bundled import BUNDLED_LANGUAGES, BundledSource

    found = entry or QUESTION_SOURCES.get(source, field="data.source")
    offered = (BUNDLED_LANGUAGES if isinstance(found, BundledSource)
               else getattr(found, "only", ()) if isinstance(found, DatasetEntry) else ())
    missing = [lang for lang in langs if offered and lang not in offered]
    if missing:
        raise InputError(f"{source} has no {', '.join(missing)} questions", field=key,
                         hint=f"it has {', '.join(offered)}")


def language_codes(given: Sequence[str], key: str) -> tuple[str, ...]:
    """``given`` as normalized codes: at least one, each once (errors name ``key``)."""
    from calm_rag.languages import normalize_code

    if not given:
        raise InputError("needs at least one language", field=key)
    try:
        codes = tuple(normalize_code(code) for code in given)
    except InputError as err:
        raise InputError(err.message, field=key, hint=err.hint) from None
    if len(set(codes)) < len(codes):
        twice = sorted({c for c in codes if codes.count(c) > 1})
        raise InputError(f"lists {', '.join(twice)} more than once", field=key,
                         hint="name each language once")
    return codes


def _backend_options() -> dict[str, type]:
    return {name: backend.Options for name, backend in SAMPLERS.items()}


@dataclass(frozen=True)
class GeneratorConfig:
    """The model that is sampled and aligned, and the backend that samples it."""

    backend: str = "vllm"
    """A registered sampler backend: ``vllm`` (offline engine in a child process), ``hf``
    (transformers) or ``openai`` (an OpenAI-compatible server)."""
    model: str = DEFAULT_GENERATOR
    """The default's short name, a local transformers folder or a hub id; for a served model
    (``openai``), the name the server serves it under."""
    options: Any = field(default=None, metadata=typed_by("backend", _backend_options))
    """The backend's options; which keys exist depends on ``backend`` (listed below)."""

    def __post_init__(self) -> None:
        backend = SAMPLERS.get(self.backend, field="backend")
        options = self.options
        if isinstance(options, dict):
            if "model" in options:
                raise InputError("set the model with generator.model, not in options",
                                 field="options.model")
            options = from_mapping(backend.Options, options, prefix="options")
        elif options is None or (type(options) in _backend_options().values()
                                 and not non_defaults(options)):
            options = backend.Options()  # none given, or another backend's defaults
        elif not isinstance(options, backend.Options):
            raise InputError(f"expected {backend.Options.__name__}, got "
                             f"{type(options).__name__}", field="options")
        object.__setattr__(self, "options", options)
        try:
            backend.check_devices(options)
        except InputError as err:  # named as the key under generator
            raise InputError(err.message, field=f"options.{err.field}", hint=err.hint) from None
        # A model that cannot exist fails now, not after retrieval, and without network; a
        # served model's name may be a path on the server only.
        if backend.reads_local_weights:
            check_model_reference(self.model, field="model", defaults=(DEFAULT_GENERATOR,))

    @property
    def backend_class(self) -> type[Sampler]:
        """The registered sampler class (not built): what the backend can do."""
        return sampler_class(self.backend)

    @property
    def adapter(self) -> str | None:
        """The LoRA adapter the options name (None for a backend that loads none)."""
        return self.options.adapter if self.backend_class.loads_adapters else None


@dataclass(frozen=True)
class AnswersConfig:
    """How the option letter is read from each response."""

    chain: str = "default"
    """A registered extractor chain: ``default`` (strict, never guesses) or ``calm`` (CALM's
    first character)."""
    fallback: Literal["logprob", "none"] = "logprob"
    """When extraction fails: score the option letters by the model's log-probabilities after
    the response (``logprob``), or leave the sample unanswered (``none``)."""

    def __post_init__(self) -> None:
        EXTRACTOR_CHAINS.check(self.chain, "chain")


@dataclass(frozen=True)
class RetrievalConfig:
    """Retrieval-augmented prompts; when enabled every stage runs zero-shot and with RAG."""

    enabled: bool = True
    """Also run the ``rag`` setting (``--no-retrieval`` turns it off for a run)."""
    index: str = "medical-demo"
    """An index name in ``index_dir`` (built from ``<index_dir>/<index>.yaml`` if missing)."""
    index_dir: str = "indexes"
    """Where index specs and built indexes live; relative to the current folder."""
    k: int = 2
    """Passages per question, in [1, 100]."""
    policy: str = "fused"
    """A registered retrieval policy: the question in its language (``native``), its pivot
    English version (``pivot``), or both fused (``fused``)."""
    hybrid: bool = False
    """Fuse BM25 keyword rankings with the dense ones."""
    fusion: FusionConfig = FusionConfig()
    """How the rankings of the question and its pivot (and BM25's, when ``hybrid``) are merged:
    ``combine`` (``zscore``, ``minmax`` or ``rrf``), ``depth`` (candidates per ranking),
    ``rrf_k``. The default never ranked below the better of native and pivot on the bundled
    sets (bench/results/retrieval_recall.md)."""
    rerank: RerankConfig = RerankConfig()
    """A cross-encoder that rereads the first ``top_n`` hits with the question and keeps its
    best ``k`` (``model``: a folder or a hub id in the local hub cache; empty, the default:
    off); each hit records ``rerank_score`` and ``retrieval_rank``."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 100:
            raise InputError(f"must lie in [1, 100], got {self.k!r}", field="k")
        QUERY_POLICIES.check(self.policy, "policy")
        if self.rerank.enabled and self.rerank.top_n < self.k:
            raise InputError(f"must be at least k ({self.k}), got {self.rerank.top_n}",
                             field="rerank.top_n", hint="the reranker keeps k of the top_n")


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation before and after alignment."""

    splits: tuple[Literal["train", "heldout"], ...] = SPLITS
    """Which questions are evaluated: the aligned (``train``) and the held-out ones."""
    sampling: SamplingParams = SamplingParams(n=1, temperature=0.0, max_tokens=96)
    """Decoding for evaluation (greedy by default, so before/after differ only by the model)."""
    metrics: tuple[str, ...] = ()
    """Registered metrics computed besides the standard ones (accuracy, extraction rate,
    consistency, agreement), saved in ``metrics.json``."""
    option_scores: bool = False
    """Score every option of each evaluation question once per language by the model's
    log-probabilities (prompt and answer cue, no response), saved as ``option_scores.jsonl``,
    for RankC, the rank-based consistency of Qi et al. (EMNLP 2023). Off by default: it runs
    every evaluation prompt once more per model (the run manifest's option_scores stages say
    what it cost)."""
    heldout_languages: tuple[str, ...] = ()
    """Languages of ``data.languages`` (or added to each of ``data.language_sets``) that are
    evaluated before and after alignment but never sampled for the vote nor trained on: does
    alignment carry over to a language it never saw?"""

    def __post_init__(self) -> None:
        if not self.splits or len(set(self.splits)) < len(self.splits):
            raise InputError("must name train, heldout or both, each once", field="splits")
        if self.heldout_languages:
            object.__setattr__(self, "heldout_languages",
                               language_codes(self.heldout_languages, "heldout_languages"))
        for i, name in enumerate(self.metrics):
            METRICS.check(name, f"metrics[{i}]")


@dataclass(frozen=True)
class Experiment:
    """One CALM experiment: data, generator, sampling, retrieval, vote, alignment, evaluation."""

    name: str
    """Names the run folder: ``<runs_dir>/<name>/<timestamp>/`` (letters, digits, ``._-``)."""
    plugins: tuple[str, ...] = ()
    """Python modules imported before the rest is checked, each registering its parts (a
    dataset, a tie policy, a metric, ...): a module name, or a ``.py`` file relative to the
    experiment file."""
    data: DataConfig = DataConfig()
    """The questions: where they come from and how they are split."""
    generator: GeneratorConfig = GeneratorConfig()
    """The model that is sampled and aligned, and the backend that samples it."""
    sampling: SamplingParams = SamplingParams(n=4, temperature=0.8, max_tokens=96)
    """Decoding of the CALM samples that vote."""
    answers: AnswersConfig = AnswersConfig()
    """How the option letter is read from each response."""
    retrieval: RetrievalConfig = RetrievalConfig()
    """Retrieval-augmented prompts; when enabled every stage runs zero-shot and with RAG."""
    vote: VoteConfig = VoteConfig()
    """The cross-lingual vote and the preference pairs."""
    align: AlignConfig = AlignConfig()
    """How the policy is trained on the votes."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """Evaluation before and after alignment."""
    shard_questions: int = 4
    """Questions per sampling shard, 1 or more: a killed run resumes after the last finished
    shard."""
    runs_dir: str = "runs"
    """Where run folders and the stage cache (``<runs_dir>/.cache``) go."""
    base_dir: str = field(default=".", metadata=INTERNAL)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InputError(f"{self.name!r} is not a usable folder name", field="name",
                             hint="use letters, digits, '.', '_' and '-'")
        at_least(self, 1, "shard_questions")
        if not self.runs_dir.strip():
            raise InputError("is empty", field="runs_dir", hint="e.g. runs (the default)")
        check_run_name(self.name, self.runs_dir)
        self.data.check_offered()
        _check_heldout_languages(self.data, self.evaluation)
        _check_read_together(self)

    @property
    def settings(self) -> tuple[str, ...]:
        return ("zero-shot", "rag") if self.retrieval.enabled else ("zero-shot",)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    def resolved(self) -> dict[str, Any]:
        """This experiment as a file that reads the same from any folder (a run's
        ``config.yaml``, ``--print-config``): the inputs it names (``data.path``,
        ``data.eval.path``) absolute from the experiment file's folder, the outputs
        (``runs_dir``, ``retrieval.index_dir``) absolute from the current folder; plugin
        files are absolute once loaded."""
        out = self.to_dict()
        base = Path(self.base_dir)
        for data in (out["data"], out["data"].get("eval") or {}):
            if data.get("path"):
                data["path"] = _absolute(data["path"], base)
        out["runs_dir"] = os.path.abspath(self.runs_dir)
        out["retrieval"]["index_dir"] = os.path.abspath(self.retrieval.index_dir)
        return out


def _absolute(path: str, base: Path) -> str:
    """``path`` (perhaps a ``{lang}`` template) from ``base``, as the data sources read it."""
    return path if Path(path).is_absolute() else os.path.normpath(base / path)


def _check_read_together(experiment: Experiment) -> None:
    """Keys that only a chosen part reads (the manual says so) are refused when another part
    is chosen, rather than ignored: a run must not differ from what its file says."""
    backend = experiment.generator.backend_class
    for key, params in (("sampling", experiment.sampling),
                        ("evaluation.sampling", experiment.evaluation.sampling)):
        if params.forced_answer and not backend.forces_answers:
            raise InputError(f"the {experiment.generator.backend} backend cannot force "
                             "answers", field=f"{key}.forced_answer",
                             hint="use generator.backend: vllm, or set forced_answer: false")
    fusion = experiment.retrieval.fusion
    if "rrf_k" in non_defaults(fusion) and fusion.combine != "rrf":
        raise InputError(f"only rrf reads it, combine is {fusion.combine}",
                         field="retrieval.fusion.rrf_k",
                         hint="set combine: rrf, or leave rrf_k out")
    _check_method_grid(experiment)


def _check_method_grid(experiment: Experiment) -> None:
    """``align.methods`` is a grid of its own: not beside language sets, and a single
    ``align.method`` given with it must be one of the grid's (else it would be ignored)."""
    align = experiment.align
    if not align.methods:
        return
    if experiment.data.language_sets:
        raise InputError("one grid at a time: data.language_sets or align.methods",
                         field="align.methods",
                         hint="compare the methods on one set (data.languages), or run "
                              "the sets with one method")
    if "method" in non_defaults(align) and align.method not in align.methods:
        raise InputError(f"{align.method!r} is not one of align.methods "
                         f"({', '.join(align.methods)}), which the grid runs instead",
                         field="align.method", hint="leave align.method out with align.methods")


def _check_heldout_languages(data: DataConfig, evaluation: EvaluationConfig) -> None:
    """Held-out languages are asked (in ``languages``, unless sets add them) and leave a
    language to train on."""
    held = evaluation.heldout_languages
    if not held:
        return
    if not data.language_sets:
        missing = [lang for lang in held if lang not in data.languages]
        if missing:
            raise InputError(f"{', '.join(missing)} not in data.languages",
                             field="evaluation.heldout_languages",
                             hint="list every held-out language in data.languages too")
    for i, langs in enumerate(data.language_sets or (data.languages,)):
        left = [lang for lang in langs if lang not in held]
        if len(left) < 2:
            where = f"data.language_sets[{i}]" if data.language_sets else "data.languages"
            said = "has no language" if not left else f"has only {left[0]}"
            raise InputError(f"{where} {said} left to train on",
                             field="evaluation.heldout_languages",
                             hint="the vote needs two languages or more that are not held "
                                  "out: hold out fewer languages")


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Read ``path``, apply ``key=value`` overrides, and check every key, type and value."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError("an experiment is a mapping of keys", path=path,
                         hint="see pipelines/demo.yaml")
    given = {}
    for override in overrides:
        key, text = apply_override(data, override)
        given[key] = text
    if data.get("plugins"):
        data["plugins"] = import_plugins(data["plugins"], path, lines, given)
    experiment = from_mapping(Experiment, data, path=path, lines=lines, overrides=given)
    return dataclasses.replace(experiment, base_dir=str(path.resolve().parent))


def apply_override(data: dict[str, Any], override: str) -> tuple[str, str]:
    """Set ``a.b.c=value`` in ``data``; the value is read as YAML (``3``, ``true``, ``[en]``).

    Returns the key and the override's text, so that errors can name the ``--set``.
    """
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set {override!r}: expected KEY=VALUE", field="--set",
                         hint="e.g. --set retrieval.k=3")
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"--set {override!r}: {'.'.join(parents[:i + 1])!r} is not a group",
                             field="--set")
        node = child
    try:
        node[last] = parse_yaml(raw, f"--set {override}")[0]
    except InputError as err:
        if "malformed YAML" not in err.message:
            raise
        node[last] = raw  # not YAML: the text itself
    return key, override


def describe() -> list[str]:
    """The manual: every key with its type, effective default and documentation, then the
    names each registry holds."""
    lines = describe_config(Experiment)
    return [*lines, "", "registered names (plugins add more):",
            *(f"  {line}" for line in describe_registries())]
