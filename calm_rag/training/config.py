"""The ``align:`` block of an experiment: how the policy is trained on the votes."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calm_rag.config import INTERNAL, at_least, check_seed, one_of
from calm_rag.errors import InputError
from calm_rag.registries import ALIGN_METHODS

TARGETS = ("majority", "gold")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAUNCHERS = ("none", "accelerate")
DISTRIBUTED = ("zero2", "zero3", "fsdp")  # shipped in calm_rag/training/launch_configs/
TRACKERS = ("none", "tensorboard", "wandb", "trackio", "mlflow")
# The package each tracker's transformers callback imports (TensorBoard: or tensorboardX).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
                    "trackio": ("trackio",), "mlflow": ("mlflow",)}
# TRL list fields whose __post_init__ also takes one string (and makes it a list of one).
TRL_TAKES_ONE = {"loss_type"}
# Strings TRL fields of a wider type take, as their help text names them (no metadata lists
# them): other strings fail in TRL's or transformers' __post_init__, after sampling.
TRL_STRINGS = {"include_num_input_tokens_seen": ("all", "non_padding", "no"),
               "pad_to_multiple_of": ("auto",)}
# TRL arguments the typed keys set (or calm_rag sets itself): align.trainer may not set them.
OWNED = {"learning_rate": "learning_rate", "num_train_epochs": "epochs",
         "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
         "max_length": "max_length", "seed": "seed", "data_seed": "seed", "beta": "beta",
         "save_steps": "save_steps", "save_strategy": "save_steps", "report_to": "report_to",
         "gradient_checkpointing": "gradient_checkpointing", "bf16": "precision",
         "fp16": "precision", "output_dir": None, "use_cpu": None}


def _check(key: str, ok: bool, value: Any, why: str, hint: str) -> None:
    if not ok:
        raise InputError(f"{why}, got {value!r}", field=key, hint=hint)


@dataclass(frozen=True)
class LoraConfig:
    """Parameters of the LoRA adapter (the ``align.lora:`` block).

    Only the adapter trains; the base weights stay frozen and, with DPO, double as the
    reference model (the adapter switched off), so no second copy of the model is held.
    """

    r: int = 8
    """LoRA rank: the adapter's inner dimension."""
    alpha: float = 16
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter's input, in [0, 1)."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear layers that get an adapter (attention by default)."""
    layers: int | None = None
    """Adapt only the last N decoder layers (null: all). Backpropagation stops at the lowest
    adapted layer, so fewer layers train faster."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        at_least(self, 1, "r", hint="e.g. 8 or 16")
        _check("alpha", self.alpha > 0, self.alpha, "must be positive", "e.g. 2 * r")
        _check("dropout", 0 <= self.dropout < 1, self.dropout, "must lie in [0, 1)", "e.g. 0.05")
        _check("targets", bool(self.targets) and all(self.targets), self.targets,
               "must name at least one layer", "e.g. [q_proj, v_proj]")
        at_least(self, 1, "layers", hint="or null for every layer")


# Groups of align keys that one method reads (its ``AlignMethod.own_keys``).
METHOD_GROUPS = ("dco",)
DCO_LANGUAGES = ("all", "pivot", "listed")
DCO_ANSWERS = ("options", "sampled", "vote")
DCO_COMPLETIONS = ("options", "responses")


@dataclass(frozen=True)
class DcoConfig:
    """Parameters of ``method: dco`` (the ``align.dco:`` block): Direct Consistency
    Optimization trains the policy so that its preference between two answers in one
    language follows the reference's preference in the other (:mod:`calm_rag.training.dco`).

    Each training row is one question, two languages (1 and 2) and two answers (a, b), with
    each answer written in both languages.
    """

    beta: float = 1.0
    """DCO's direction β: the loss asks language 1's margin to follow language 2's reference
    preference divided by β, and language 2's to follow language 1's times β. 1 is symmetric
    (the paper's default); above 1 language 2 follows language 1 (the pivot) more."""
    languages: Literal["all", "pivot", "listed"] = "all"
    """Which pairs of languages: ``all`` (every two of a question's languages, in the order
    of data.languages), ``pivot`` (the pivot, as language 1, with each other language), or
    ``listed`` (the pairs in ``pairs``)."""
    pivot: str = "en"
    """Language 1 of every pair with ``languages: pivot``."""
    pairs: tuple[tuple[str, ...], ...] = ()
    """The pairs of languages with ``languages: listed``, language 1 first: [[en, zh]]."""
    answers: Literal["options", "sampled", "vote"] = "options"
    """Which pairs of answers: ``options`` (every two options, as the paper draws them; no
    vote needed), ``sampled`` (every two answers the samples gave), or ``vote`` (the vote's
    target against each answer CALM's pairs reject: the same comparisons as dpo)."""
    completions: Literal["options", "responses"] = "options"
    """What the policy scores: ``options``, each answer as the language writes it (its
    answer marker, the letter and the option text; the paper scores the candidate answers'
    texts), or ``responses``, a sampled response in that language giving the answer."""
    gold_dpo: float = 1.0
    """The weight of DPO's loss on the gold pairs that ``method: gold-dpo-dco`` adds to DCO's
    (DPO's β is ``align.beta``); ``dco`` does not read it."""

    def __post_init__(self) -> None:
        _check("beta", self.beta > 0, self.beta, "must be positive", "1 is symmetric")
        _check("gold_dpo", self.gold_dpo > 0, self.gold_dpo, "must be positive",
               "1 weighs DPO's loss as DCO's; method dco for no DPO term")
        one_of("languages", self.languages, DCO_LANGUAGES)
        one_of("answers", self.answers, DCO_ANSWERS)
        one_of("completions", self.completions, DCO_COMPLETIONS)
        object.__setattr__(self, "pivot", _language("pivot", self.pivot))
        pairs = tuple(tuple(pair) for pair in self.pairs)
        for pair in pairs:
            _check("pairs", len(pair) == 2 and pair[0] != pair[1], list(pair),
                   "each pair is two different languages", "e.g. [[en, zh], [en, de]]")
        object.__setattr__(self, "pairs", tuple((_language("pairs", a), _language("pairs", b))
                                                for a, b in pairs))
        listed = self.languages == "listed"
        _check("pairs", bool(self.pairs) or not listed, [], "languages: listed needs pairs",
               "list them, e.g. [[en, zh]]")
        _check("pairs", listed or not self.pairs, [list(p) for p in self.pairs],
               "are read only with languages: listed", "set languages: listed, or drop them")


def trl_value_check(key: str, value: Any, hint: Any, choices: Any, config: str) -> None:
    """``value`` of TRL config field ``key`` has the field's declared type and, for an enum
    (a scheduler type, a strategy, an optimizer) or a field that lists its choices, is one of
    them: else an InputError now, not a transformers traceback after sampling."""
    allowed = _choices(hint, choices)
    if isinstance(value, str) and allowed is not None:
        words = value.split() if _is_list_of_enum(hint) else [value]
        wrong = [w for w in words if w not in allowed]
        _check(key, not wrong, value, f"is not a choice of TRL's {config}",
               f"use one of {', '.join(allowed)}")
        return
    _check(key, _fits(value, hint), value,
           f"TRL's {config} takes {_type_words(hint)}", "see TRL's documentation of the field")


def _choices(hint: Any, choices: Any) -> list[str] | None:
    """The strings a field accepts, if it names them: an enum in its type, or ``choices``."""
    if choices is not None:
        return [str(c) for c in choices]
    for arg in (hint, *typing.get_args(hint)):
        for inner in (arg, *typing.get_args(arg)):
            if isinstance(inner, type) and issubclass(inner, enum.Enum):
                return [str(member.value) for member in inner]
    return None


def _is_list_of_enum(hint: Any) -> bool:
    """A field like ``debug: str | list[DebugOption]``, whose string form lists words."""
    return not any(isinstance(a, type) and issubclass(a, enum.Enum)
                   for a in typing.get_args(hint)) and any(
        typing.get_origin(a) is list for a in typing.get_args(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value has the declared type ``hint`` (ints pass for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value
                                                       if args)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and not (isinstance(value, float) and math.isnan(value)))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str) and value in {str(m.value) for m in hint}
    return isinstance(hint, type) and isinstance(value, hint)  # an object: not from YAML


def _type_words(hint: Any, plural: bool = False) -> str:
    """A declared type in words: ``a whole number or null``, ``a list of strings``; an
    enum's string form is said once, as its choices."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        enum_too = _choices(hint, None) is not None  # its strings are the enum's choices
        return " or ".join(_type_words(arg, plural) for arg in args
                           if not (enum_too and arg is str))
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_type_words(args[0], plural=True)}" if args else "a list"
    if origin is dict or hint is dict:
        return "mappings" if plural else "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return f"{'' if plural else 'one '}of {', '.join(str(m.value) for m in hint)}"
    words = {bool: ("true or false", "true/false values"), int: ("a whole number",
             "whole numbers"), float: ("a number", "numbers"), str: ("a string", "strings")}
    if hint in words:
        return words[hint][plural]
    return f"a {getattr(hint, '__name__', hint)} object (not a YAML value)"


def _language(key: str, code: str) -> str:
    """A language code normalized, an unknown one refused under ``key``."""
    from calm_rag.languages import normalize_code

    try:
        return normalize_code(code)
    except InputError as err:
        raise InputError(err.message, field=key, hint=err.hint) from None


@dataclass(frozen=True)
class AlignConfig:
    """Parameters that control the alignment (the ``align:`` block of an experiment)."""

    method: str = "dpo"
    """A registered align method: ``dpo`` trains on the preference pairs; ``sft`` fine-tunes
    on the responses that agree with the target (CALM's supervised baseline); ``dco`` trains
    each language's preference between two answers to follow the other language's
    (Direct Consistency Optimization; ``align.dco.*``); ``gold-dpo-dco`` adds DPO's loss on
    the gold answers to DCO's (``align.dco.gold_dpo``)."""
    methods: tuple[str, ...] = ()
    """Two or more registered align methods compared in one grid (``[dpo, dco]``): the
    experiment runs once per method, every run sharing the samples and the votes (their
    stages are cached), and ``<runs_dir>/<name>/`` gets ``grid.json`` and ``report.md``
    comparing them; ``method`` is then not read. Empty: one run with ``method``."""
    target: Literal["majority", "gold"] = "majority"
    """``majority`` takes the cross-lingual vote as the answer to prefer; ``gold`` takes the
    dataset's label instead (an upper-bound baseline)."""
    rounds: int = 1
    """Sample → vote → train rounds, each from the last policy (0: no training, the base model
    is evaluated)."""
    beta: float = 0.1
    """DPO's β: higher keeps the policy closer to the reference model (DCO has its own,
    ``dco.beta``)."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate, in (0, 1]."""
    epochs: float = 1
    """Passes over the training rows."""
    batch_size: int = 4
    """Rows per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimiser step (effective batch × this)."""
    max_length: int = 512
    """Tokens of prompt + response kept; a row whose prompt alone is this long is dropped."""
    lora: LoraConfig = LoraConfig()
    """The LoRA adapter (``align.lora.*``)."""
    dco: DcoConfig = DcoConfig()
    """The own keys of ``method: dco`` and ``gold-dpo-dco`` (``align.dco.*``); other methods
    ignore them."""
    seed: int = 0
    """Seed of the adapter's init and the shuffle."""
    threads: int | None = None
    """CPU threads for torch; default: the cores available."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute precision: fp32, bf16 (autocast), fp16 (autocast, GPU only), or auto: bf16
    where the hardware computes it natively (a bf16 GPU, or a CPU with AVX512-BF16/AMX), else
    fp32. On a GPU with bf16 the model is also loaded in bf16 (half the memory)."""
    merge: bool = False
    """Also write the adapter folded into the base weights (``merged/``, a full model). Off:
    only the adapter is written, and the next round and the evaluation read base + adapter."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, slower steps."""
    save_steps: int | None = None
    """Save a checkpoint every N optimiser steps (null: none). A run killed and started again
    resumes from the last one; they are removed once the adapter is written."""
    report_to: Any = "none"
    """Where the trainer logs: none, tensorboard, wandb, trackio, mlflow, or a list of them;
    each also gets the evaluation's figures. TensorBoard's events go to the stage folder's
    ``tensorboard/`` (the evaluation's to the run's); the others where transformers' callbacks
    put them (WANDB_PROJECT/WANDB_MODE, MLFLOW_TRACKING_URI/MLFLOW_EXPERIMENT_NAME, Trackio's
    local store or TRACKIO_SPACE_ID), checked when the config loads."""
    launcher: Literal["none", "accelerate"] = "none"
    """``none`` trains in the pipeline's process; ``accelerate`` runs the training in a child
    under ``accelerate launch`` (several processes, GPUs or nodes)."""
    num_processes: int = 1
    """Training processes in all (with the accelerate launcher): one per GPU, or CPU workers
    (gloo) on a machine without one."""
    num_machines: int = 1
    """Nodes taking part (with the accelerate launcher); start the same run on each."""
    machine_rank: int = 0
    """This node's rank among num_machines (0 writes the adapter)."""
    main_process_ip: str | None = None
    """Address of the rank-0 node (needed with several machines)."""
    main_process_port: int | None = None
    """Port of the rank-0 node (default: accelerate's, 29500)."""
    distributed: str | None = None
    """Sharding under the accelerate launcher: zero2, zero3 (DeepSpeed), fsdp, or the path of
    an accelerate config file (null: plain data parallel)."""
    trainer: dict[str, Any] = field(default_factory=dict)
    """Any other field of the method's TRL config (DPOConfig for dpo and dco, SFTConfig for sft),
    passed as it is, e.g. {warmup_steps: 10, lr_scheduler_type: cosine}; checked against
    TRL's own fields."""
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict, metadata=INTERNAL)
    """Set by the pipeline from ``sampling.chat_template_kwargs``: training renders each
    prompt as the sampler did (TRL reads them from each row)."""

    def __post_init__(self) -> None:
        ALIGN_METHODS.check(self.method, "method")
        _check("target", self.target in TARGETS, self.target, "unknown target",
               f"use one of {', '.join(TARGETS)}")
        _check("precision", self.precision in PRECISIONS, self.precision, "unknown precision",
               f"use one of {', '.join(PRECISIONS)}")
        _check("rounds", 0 <= self.rounds <= 100, self.rounds, "must lie in [0, 100]",
               "0 samples, votes and evaluates without training")
        at_least(self, 1, "batch_size", "grad_accum", hint="a whole number, 1 or more")
        for key in ("beta", "epochs"):
            _check(key, getattr(self, key) > 0, getattr(self, key), "must be positive",
                   "e.g. " + {"beta": "0.1", "epochs": "1"}[key])
        _check("learning_rate", 0 < self.learning_rate <= 1, self.learning_rate,
               "must lie in (0, 1]", "e.g. 5e-5")
        _check("max_length", self.max_length >= 8, self.max_length, "must be at least 8",
               "room for the prompt and the response, e.g. 512")
        at_least(self, 1, "threads", hint="or null for every core available")
        check_seed(self, "seed")
        self._check_scale_out()
        self._check_methods()

    def _check_methods(self) -> None:
        """``methods`` names two or more registered methods once each, and every other key
        holds for each of them (a launcher, ``trainer`` fields), now rather than after the
        first method's run."""
        if not self.methods:
            return
        object.__setattr__(self, "methods", tuple(self.methods))
        for i, name in enumerate(self.methods):
            ALIGN_METHODS.check(name, f"methods[{i}]")
        _check("methods", len(set(self.methods)) == len(self.methods) >= 2,
               list(self.methods), "must name two or more different methods",
               "e.g. [dpo, dco]; one method: align.method")
        _check("methods", self.rounds >= 1, list(self.methods),
               "compares trainings, but align.rounds is 0", "set align.rounds: 1")
        for name in self.methods:
            try:
                dataclasses.replace(self, method=name, methods=())
            except InputError as err:
                raise InputError(f"with method {name} (align.methods): {err.message}",
                                 field=err.field, hint=err.hint) from None

    def _check_scale_out(self) -> None:
        one_of("launcher", self.launcher, LAUNCHERS)
        at_least(self, 1, "save_steps", "num_processes", "num_machines", hint="a whole number")
        _check("machine_rank", 0 <= self.machine_rank < self.num_machines, self.machine_rank,
               "must lie in [0, num_machines)", "0 on the main node")
        _check("main_process_ip", self.num_machines == 1 or bool(self.main_process_ip),
               self.main_process_ip, "is needed with several machines", "rank 0's address")
        _check("main_process_port", self.main_process_port is None
               or 1 <= self.main_process_port <= 65535, self.main_process_port,
               "must be a port number", "e.g. 29500")
        _check("distributed", self.distributed is None or self.distributed in DISTRIBUTED
               or Path(self.distributed).is_file(), self.distributed,
               "is neither a shipped config nor a file",
               f"use one of {', '.join(DISTRIBUTED)} or an accelerate config file's path")
        wide = self.num_processes > 1 or self.num_machines > 1 or self.distributed
        _check("launcher", self.launcher == "accelerate" or not wide, self.launcher,
               "several processes or a distributed config need a launcher",
               "set align.launcher: accelerate")
        _check("launcher", self.launcher == "none"
               or ALIGN_METHODS.get(self.method, "align.method").launchable, self.launcher,
               f"method {self.method!r} cannot run under a launcher (its ranks could not "
               "rebuild it)", "use launcher: none, or a launchable method: "
               + ", ".join(n for n, m in ALIGN_METHODS.items() if m.launchable))
        given = [self.report_to] if isinstance(self.report_to, str) else self.report_to
        _check("report_to", isinstance(given, list | tuple) and bool(given)
               and all(isinstance(t, str) and t in TRACKERS for t in given), self.report_to,
               "unknown tracker", f"use one of {', '.join(TRACKERS)}, or a list of them")
        object.__setattr__(self, "report_to", tuple(t for t in given if t != "none") or "none")
        self._check_trainer()
        self._check_trackers()  # after: Trackio's check reads align.trainer

    def _check_trackers(self) -> None:
        """Each tracker's package is installed and it can log (credentials, a store that
        opens), or the trainer would fail after sampling."""
        from calm_rag.training.trackers import TRACKER_CHECKS

        for tracker in self.trackers:
            packages = TRACKER_PACKAGES.get(tracker, ())
            if packages and not any(importlib.util.find_spec(p) for p in packages):
                raise InputError(f"{tracker!r} needs the {' or '.join(packages)} package, "
                                 "which is not installed", field="report_to",
                                 hint=f"pip install {packages[0]}, or report_to: none")
            if check := TRACKER_CHECKS.get(tracker):
                check(self.trainer)

    def _check_trainer(self) -> None:
        """``align.trainer`` keys are fields of the method's TRL config, not set elsewhere."""
        if not self.trainer:
            return
        import trl  # seconds to import: only when the block is used

        name = ALIGN_METHODS.get(self.method, "align.method").trl_config
        config = getattr(trl, name)
        fields = {f.name: f for f in dataclasses.fields(config)}
        hints = typing.get_type_hints(config)
        for key, value in self.trainer.items():
            _check(f"trainer.{key}", key in fields, value,
                   f"not a field of TRL's {name}",
                   "see TRL's documentation of the trainer's arguments")
            owner = OWNED.get(key, "")
            _check(f"trainer.{key}", key not in OWNED, value,
                   f"is set by align.{owner}" if owner else "is set by calm_rag itself",
                   f"set align.{owner} instead" if owner else "leave it out")
            hint = hints[key] | str if key in TRL_TAKES_ONE else hints[key]
            trl_value_check(f"trainer.{key}", value, hint,
                            fields[key].metadata.get("choices", TRL_STRINGS.get(key)), name)
        if self.save_steps:
            self._check_resumable()

    def _check_resumable(self) -> None:
        """Checkpoints a killed run can resume from: the newest may be half-written when the
        kill comes (the Trainer deletes old ones before it is sealed), and a checkpoint
        without the optimizer's state would resume as a different run."""
        limit = self.trainer.get("save_total_limit")
        enough = limit is None or (isinstance(limit, int) and limit >= 2)
        _check("trainer.save_total_limit", enough, limit,
               "keeps too few checkpoints to resume from", "2 or more, or leave it out")
        _check("trainer.save_only_model", not self.trainer.get("save_only_model"),
               self.trainer.get("save_only_model"),
               "leaves the optimizer out of the checkpoints a run resumes from",
               "leave it out with align.save_steps")

    @property
    def trackers(self) -> list[str]:
        """``report_to`` as the list TrainingArguments takes."""
        return ["none"] if self.report_to == "none" else list(self.report_to)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the resolved config and the cache key."""
        values = dataclasses.asdict(self)
        del values["chat_template_kwargs"]  # not a key of the align block (rows carry them)
        if not self.methods:  # a grid's runs train one method each: their keys stay as they were
            del values["methods"]
        else:
            values["methods"] = list(self.methods)
        values["lora"]["targets"] = list(self.lora.targets)
        values["dco"]["pairs"] = [list(pair) for pair in self.dco.pairs]
        own = ALIGN_METHODS.get(self.method, "align.method").own_keys
        for group in METHOD_GROUPS:
            if group != own:  # another method's keys: out of this training's stage key
                del values[group]
        if not isinstance(self.report_to, str):
            values["report_to"] = list(self.report_to)
        return values

