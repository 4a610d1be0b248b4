"""Generated values for every key of an experiment and every plugin shape, each with its
verdict: a valid value loads; an invalid one is an InputError (exit 2 on the CLI) naming that
key. The keys are found by walking the config dataclasses, so a new key is covered as soon as
it exists."""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.experiment import Experiment, load_experiment

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One key of the experiment: its dotted name, its type, its default as YAML says it, and
    the keys set beside it to reach it (a backend's options need that backend)."""

    key: str
    hint: Any
    default: Any
    context: tuple[tuple[str, Any], ...] = ()


def _required(cls: type) -> bool:
    return any(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls))


def _walk(cls: type, instance: Any, prefix: str, context: tuple = ()) -> list[Leaf]:
    """Every key under group ``cls`` (``instance``: its effective defaults)."""
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key, hint = f"{prefix}{f.name}", hints[f.name]
        value = getattr(instance, f.name) if instance is not None else None
        if "typed_by" in f.metadata:  # generator.options: one group per backend
            for choice, group in f.metadata["types_of"]().items():
                sibling = ((f"{prefix}{f.metadata['typed_by']}", choice),)
                out += _walk(group, group(), f"{key}.", context + sibling)
            continue
        inner = _optional(hint)
        if dataclasses.is_dataclass(inner) and not _required(inner):
            out += _walk(inner, value if value is not None else inner(), f"{key}.", context)
            continue
        out.append(Leaf(key, hint, _yaml_value(value), context))
    return out


def _optional(hint: Any) -> Any:
    """``X`` of ``X | None``, else ``hint``."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _yaml_value(value: Any) -> Any:
    from calm_rag.config import plain

    return plain(value)


LEAVES = _walk(Experiment, Experiment(name="x"), "")
WORDS = st.text(alphabet="abcxyz", min_size=1, max_size=6).filter(lambda w: w not in {"x"})


def _wrong(hint: Any) -> st.SearchStrategy[Any] | None:
    """Values of the wrong type (or out of every range) for ``hint``; None: any value fits."""
    hint = _optional(hint)
    origin = typing.get_origin(hint)
    if hint is Any:
        return None
    if origin is Literal:
        return WORDS.filter(lambda w: w not in typing.get_args(hint))
    if origin in (tuple, list):
        return st.one_of(st.integers(), WORDS, st.dictionaries(WORDS, st.integers(),
                                                               min_size=1, max_size=2))
    if origin is dict:
        return st.one_of(st.integers(), WORDS, st.lists(st.integers(), min_size=1, max_size=2))
    if dataclasses.is_dataclass(hint):  # a group given as something else than a mapping
        return st.one_of(st.integers(), WORDS, st.lists(st.integers(), min_size=1, max_size=2))
    if hint is bool:
        return st.one_of(st.integers(), WORDS, st.lists(st.booleans(), min_size=1, max_size=2))
    if hint is int:
        return st.one_of(WORDS, st.booleans(), st.floats(allow_nan=False).filter(
            lambda v: v != int(v) if v == v and abs(v) != float("inf") else True),
            st.integers(min_value=2**53 + 1), st.lists(st.integers(), min_size=1, max_size=2))
    if hint is float:
        return st.one_of(WORDS, st.booleans(), st.just(float("inf")), st.just(float("nan")),
                         st.lists(st.floats(), min_size=1, max_size=2))
    if hint is str:
        return st.one_of(st.integers(), st.booleans(), st.lists(WORDS, min_size=1, max_size=2),
                         st.dictionaries(WORDS, st.integers(), min_size=1, max_size=2))
    raise AssertionError(f"no invalid values known for {hint!r}: teach _wrong this type")


def _document(leaf: Leaf, value: Any) -> dict:
    data: dict = {"name": "x"}
    for key, set_to in (*leaf.context, (leaf.key, value)):
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = set_to
    return data


def _load(folder: Path, data: dict) -> Experiment:
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_experiment(path)


def _names(err: InputError, key: str) -> bool:
    field = err.field or ""
    return field == key or field.startswith((f"{key}.", f"{key}["))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("config_properties")


def test_the_walk_finds_every_group_and_backend():
    keys = {leaf.key for leaf in LEAVES}
    assert {"name", "data.languages", "sampling.n", "evaluation.sampling.max_tokens",
            "align.trainer", "vote.regenerate_tries", "generator.options.tensor_parallel_size",
            "generator.options.batch_size", "retrieval.fusion.rrf_k"} <= keys
    assert all(_wrong(leaf.hint) is not None or _optional(leaf.hint) is Any for leaf in LEAVES)


def _id(leaf: Leaf) -> str:
    return "/".join([*(f"{k}={v}" for k, v in leaf.context), leaf.key])


TYPED = [leaf for leaf in LEAVES if _optional(leaf.hint) is not Any]


@pytest.mark.parametrize("leaf", LEAVES, ids=_id)
def test_every_key_given_its_default_loads(folder, leaf):
    """Each key written out with its effective default (as ``--describe`` lists it) loads,
    and reads back as that default."""
    if leaf.key == "name":
        return
    loaded = _load(folder, _document(leaf, leaf.default))
    value: Any = loaded
    for part in leaf.key.split("."):
        value = getattr(value, part)
    assert _yaml_value(value) == leaf.default


@pytest.mark.parametrize("leaf", TYPED, ids=_id)
@settings(FAST, max_examples=4)
@given(data=st.data())
def test_every_key_given_a_wrong_value_is_refused_by_name(folder, data, leaf):
    value = data.draw(_wrong(leaf.hint), label=leaf.key)
    with pytest.raises(InputError) as err:
        _load(folder, _document(leaf, value))
    assert _names(err.value, leaf.key), (leaf.key, value, str(err.value))
    assert err.value.path is not None and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- plugin shapes

_serial = itertools.count()
EXCEPTIONS = st.sampled_from(["ValueError", "RuntimeError", "KeyError", "ImportError",
                              "TypeError"])
MESSAGES = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\\'\r"),
                   max_size=30)


def _plugin(folder: Path, body: str) -> str:
    name = f"plugin_{next(_serial)}.py"
    (folder / name).write_text(body, encoding="utf-8")
    return f"./{name}"


def _bad_plugin(folder: Path, kind: str, error: str, message: str) -> tuple[str, str]:
    """A plugin entry of shape ``kind`` and what its error says."""
    if kind == "raises":
        flat = " ".join(message.split())
        return _plugin(folder, f"x = 1\nraise {error}({message!r})\n"), f"failed: {error}"\
            if not flat else f"failed: {error}: {flat}" if error != "KeyError" else \
            f"failed: {error}: {message!r}"
    if kind == "missing":
        return f"./absent_{next(_serial)}.py", "no plugin file"
    if kind == "not callable":
        return (_plugin(folder, "from calm_rag.registries import METRICS\n\n"
                                f"METRICS.register('shape_{next(_serial)}', 42)\n"),
                "must be callable")
    return "not a module!", "is neither a module name nor a .py file"


@settings(FAST, max_examples=40)
@given(valid=st.integers(min_value=0, max_value=2),
       kind=st.sampled_from(["raises", "missing", "not callable", "bad name"]),
       error=EXCEPTIONS, message=MESSAGES)
def test_a_plugin_of_any_bad_shape_fails_in_one_line_naming_its_entry(folder, valid, kind,
                                                                      error, message):
    plugins = [_plugin(folder, "VALUE = 1\n") for _ in range(valid)]
    entry, said = _bad_plugin(folder, kind, error, message)
    with pytest.raises(InputError) as err:
        _load(folder, {"name": "x", "plugins": [*plugins, entry]})
    assert err.value.field == f"plugins[{valid}]"
    assert said in str(err.value) and "\n" not in str(err.value)
    assert err.value.line == 3 + valid  # name, plugins:, then one line per entry


@settings(FAST, max_examples=20)
@given(value=st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), min_size=1,
                                                              max_size=2),
                       st.dictionaries(WORDS, WORDS, min_size=1, max_size=2)))
def test_plugins_that_are_not_a_list_of_names_are_refused(folder, value):
    with pytest.raises(InputError) as err:
        _load(folder, {"name": "x", "plugins": value})
    assert err.value.field == "plugins"


def test_a_refused_key_exits_2_with_one_line_on_the_cli(folder, capsys):
    path = folder / "cli.yaml"
    path.write_text("name: x\nsampling:\n  n: many\n", encoding="utf-8")
    assert main(["run", "--check", str(path)]) == 2
    assert capsys.readouterr().err == (f"calm-rag run: error: {path}:3: field 'sampling.n': "
                                       "expected int, got str\n")
