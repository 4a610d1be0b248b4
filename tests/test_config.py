"""The one config loader: numbers as YAML 1.1 writes them, every numeric key range-checked and
named once with file:line, non-finite values, duplicate keys, alias bombs, typed backend options."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from calm_rag.config import describe, from_mapping, parse_yaml
from calm_rag.errors import InputError, flatten
from calm_rag.experiment import Experiment, load_experiment
from calm_rag.experiment import describe as describe_experiment
from calm_rag.retrieval.spec import IndexSpec, load_spec

NUMERIC = re.compile(r"^(?P<key>[\w.]+) \((?P<type>int|float)( \| None)?, ")
SPEC_HEAD = "name: x\ncorpus:\n  - {type: jsonl, path: c.jsonl}\n"


def numeric_keys(lines: list[str]) -> list[tuple[str, str, str | None]]:
    """(key, type, backend) of every int or float key the manual lists."""
    keys, backend = [], None
    for line in lines:
        if chosen := re.match(r"^generator\.options \(backend: (\w+)\)", line):
            backend = chosen[1]
        if found := NUMERIC.match(line):
            key = found["key"]
            keys.append((key, found["type"], backend if key.startswith("generator.") else None))
    return keys


EXPERIMENT_KEYS = numeric_keys(describe(Experiment))
SPEC_KEYS = numeric_keys(describe(IndexSpec))


def nested_yaml(key: str, value: str, backend: str | None = None, head: str = "name: x\n"
                ) -> tuple[str, int]:
    """YAML setting dotted ``key`` to ``value``, and the line the value is on."""
    lines = head.rstrip("\n").split("\n")
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        lines.append(f"{'  ' * depth}{part}: {value if last else ''}".rstrip())
        if part == "generator" and backend:
            lines.append(f"  backend: {backend}")
    return "\n".join(lines) + "\n", len(lines)


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_manual_lists_numeric_keys_of_every_group_and_backend():
    keys = {key for key, _, _ in EXPERIMENT_KEYS}
    assert {"data.train", "sampling.top_p", "evaluation.sampling.top_p", "align.lora.r",
            "vote.min_agreement", "shard_questions", "generator.options.batch_size",
            "generator.options.concurrency", "generator.options.kv_cache_gib"} <= keys
    assert {key for key, _, _ in SPEC_KEYS} >= {"chunking.chunk_size", "faiss.nprobe"}


@pytest.mark.parametrize(("key", "kind", "backend"), EXPERIMENT_KEYS,
                         ids=[f"{k}[{b}]" if b else k for k, _, b in EXPERIMENT_KEYS])
def test_every_numeric_key_out_of_range_names_the_key_once(tmp_path, key, kind, backend):
    text, line = nested_yaml(key, "-1", backend)
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_experiment(path)
    message = str(err.value)
    assert err.value.field == key and message.count(key) == 1, message
    assert err.value.path == str(path) and err.value.line == line, message
    assert message.startswith(f"{path}:{line}: field '{key}': ")


@pytest.mark.parametrize(("key", "kind", "backend"),
                         [k for k in EXPERIMENT_KEYS if k[1] == "float"])
def test_non_finite_floats_are_refused(tmp_path, key, kind, backend):
    for value in (".inf", "-.inf", ".nan"):
        text, line = nested_yaml(key, value, backend)
        with pytest.raises(InputError, match="must be a finite number") as err:
            load_experiment(write(tmp_path, text))
        assert err.value.field == key and err.value.line == line


@pytest.mark.parametrize(("key", "value", "says"), [
    ("sampling.top_p", "2", "must lie in (0, 1]"),
    ("evaluation.sampling.top_p", "2", "must lie in (0, 1]"),
    ("vote.min_agreement", "1.5", "must lie in [0, 1]"),
    ("align.lora.dropout", "1", "must lie in [0, 1)"),
    ("align.learning_rate", "2", "must lie in (0, 1]"),
    ("retrieval.k", "1000", "must lie in [1, 100]"),
    ("data.seed", "4294967296", "must lie in [0, "),
    ("align.seed", "-1", "must lie in [0, "),
    ("sampling.temperature", "1e3", "must lie in [0, 100]"),  # YAML 1.1 reads 1e3 as text
])
def test_upper_bounds(tmp_path, key, value, says):
    text, line = nested_yaml(key, value)
    with pytest.raises(InputError) as err:
        load_experiment(write(tmp_path, text))
    assert err.value.field == key and err.value.line == line and says in str(err.value)


@pytest.mark.parametrize(("key", "kind", "backend"), SPEC_KEYS)
def test_every_numeric_index_key_out_of_range_names_the_key(tmp_path, key, kind, backend):
    text, line = nested_yaml(key, "-1", head=SPEC_HEAD)
    path = write(tmp_path, text, "spec.yaml")
    with pytest.raises(InputError) as err:
        load_spec(path)
    assert err.value.field == key and err.value.line == line
    assert str(err.value).count(key) == 1


def test_yaml_11_number_strings_are_floats_from_the_file_and_from_set(tmp_path):
    path = write(tmp_path, "name: x\nalign:\n  learning_rate: 5e-6\n  beta: 1E-3\n"
                           "vote:\n  min_agreement: 5E-1\n")
    loaded = load_experiment(path)
    assert loaded.align.learning_rate == 5e-6 and loaded.align.beta == 1e-3
    assert loaded.vote.min_agreement == 0.5
    again = load_experiment(path, ["align.learning_rate=1E-3", "align.beta=2.5e+0",
                                   "sampling.temperature=5e-1"])
    assert (again.align.learning_rate, again.align.beta) == (1e-3, 2.5)
    assert again.sampling.temperature == 0.5
    with pytest.raises(InputError) as err:
        load_experiment(path, ["align.learning_rate=-2.5e+3"])
    assert str(err.value).startswith("--set align.learning_rate=-2.5e+3: field "
                                     "'align.learning_rate': must lie in (0, 1]")
    with pytest.raises(InputError, match="expected int, got str"):
        load_experiment(path, ["align.batch_size=5e0"])  # an int key takes no float string


def test_post_init_errors_are_prefixed_once_with_the_line(tmp_path):
    cases = {"align:\n  beta: -1\n": ("align.beta", 3),
             "align:\n  lora:\n    r: 0\n": ("align.lora.r", 4),
             "evaluation:\n  sampling:\n    top_p: 2\n": ("evaluation.sampling.top_p", 4),
             "data:\n  heldout: -1\n": ("data.heldout", 3),
             "data:\n  train: 0\n": ("data.train", 3)}
    for body, (key, line) in cases.items():
        with pytest.raises(InputError) as err:
            load_experiment(write(tmp_path, "name: x\n" + body))
        assert (err.value.field, err.value.line) == (key, line)
        assert str(err.value).count(key) == 1


def test_languages_are_known_codes_each_once(tmp_path):
    for value, says in (("[en, en]", "lists en more than once"),
                        ("[en, EN]", "lists en more than once"),
                        ("[en, xx]", "unknown language code 'xx'"),
                        ("[]", "needs at least one language")):
        with pytest.raises(InputError) as err:
            load_experiment(write(tmp_path, f"name: x\ndata:\n  languages: {value}\n"))
        assert err.value.field == "data.languages" and err.value.line == 3
        assert says in str(err.value)
    loaded = load_experiment(write(tmp_path, "name: x\ndata:\n  languages: [EN, cn]\n"))
    assert loaded.data.languages == ("en", "zh")


def test_duplicate_keys_are_refused_at_the_second(tmp_path):
    path = write(tmp_path, "name: x\nalign:\n  beta: 0.1\n  rounds: 1\n  beta: 0.2\n")
    with pytest.raises(InputError, match="duplicate key \\(first on line 3\\)") as err:
        load_experiment(path)
    assert (err.value.field, err.value.line) == ("align.beta", 5)
    with pytest.raises(InputError, match="duplicate key"):
        parse_yaml("a: 1\na: 2\n")


def test_an_alias_bomb_fails_fast(tmp_path):
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    rows.append("name: " + "x" * 440)  # about the 853 bytes of the probe's bomb
    path = write(tmp_path, "\n".join(rows) + "\n")
    assert path.stat().st_size >= 800
    started = time.perf_counter()
    with pytest.raises(InputError, match="expands to more than"):
        load_experiment(path)
    assert time.perf_counter() - started < 5
    with pytest.raises(InputError, match="refers to itself|malformed YAML"):
        parse_yaml("a: &a [*a]\n")
    with pytest.raises(InputError, match="nested"):
        parse_yaml("a: " + "[" * 2000 + "]" * 2000 + "\n")
    # Aliases within bounds still work.
    data, _ = parse_yaml("base: &b {n: 2}\nsampling: *b\n")
    assert data["sampling"] == {"n": 2}


def test_not_utf8_is_one_input_error(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"\xff\xfename: x\n")
    with pytest.raises(InputError, match="not UTF-8"):
        load_experiment(path)


def test_backend_options_are_a_typed_group_checked_at_load(tmp_path):
    body = "name: x\ngenerator:\n  backend: {b}\n  options:\n    {k}: {v}\n"
    for backend, key, value, says in (
            ("hf", "batch_size", "0", "must be at least 1, got 0"),
            ("hf", "threads", "-1", "must be at least 1, got -1"),
            ("hf", "dtype", "int3", "'int3' is not allowed"),
            ("hf", "base_url", "x", "unknown key"),
            ("openai", "concurrency", "0", "must lie in [1, 4096]"),
            ("openai", "timeout", ".inf", "must be a finite number"),
            ("vllm", "gpu_memory_utilization", "1.5", "must lie in (0, 1]"),
            ("vllm", "batch_size", "4", "unknown key"),
            ("hf", "model", "x", "set the model with generator.model")):
        path = write(tmp_path, body.format(b=backend, k=key, v=value))
        with pytest.raises(InputError) as err:
            load_experiment(path)
        message = str(err.value)
        assert err.value.field == f"generator.options.{key}" and err.value.line == 5, message
        assert says in message and "sampler." not in message
    loaded = load_experiment(write(tmp_path, body.format(b="hf", k="batch_size", v="3")))
    assert loaded.generator.options.batch_size == 3 and loaded.generator.options.threads is None
    assert loaded.to_dict()["generator"]["options"] == {
        "batch_size": 3, "dtype": "auto", "threads": None, "progress": True, "adapter": None,
        "device": "auto", "device_map": None}
    with pytest.raises(InputError) as err:
        load_experiment(write(tmp_path, "name: x\ngenerator: {backend: hf}\n"),
                        ["generator.options.batch_size=0"])
    assert str(err.value).startswith("--set generator.options.batch_size=0: field "
                                     "'generator.options.batch_size'")


def test_describe_shows_effective_defaults_and_every_backend():
    lines = describe_experiment()
    text = "\n".join(lines)
    assert "sampling.n (int, default 4)" in text  # the experiment's default, not the class's
    assert "sampling.temperature (float, default 0.8)" in text
    assert "evaluation.sampling.n (int, default 1)" in text
    for backend in ("hf", "openai", "vllm"):
        assert f"generator.options (backend: {backend})" in text
    assert "generator.options.batch_size (int, default 12): Prompts per generate call" in text
    assert "generator.options.model" not in text  # generator.model says it
    assert "  tie policy: drop, first-seen, pivot" in lines


def test_loader_is_the_one_way_to_build_groups_from_mappings():
    from calm_rag.training.config import AlignConfig
    from calm_rag.vote.voting import VoteConfig

    assert not hasattr(AlignConfig, "from_dict") and not hasattr(VoteConfig, "from_dict")
    vote = from_mapping(VoteConfig, {"tie": "drop", "language_order": ["cn", "en"]})
    assert vote.language_order == ("zh", "en")


# --------------------------------------------------------------------------- generated inputs

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

# Not ``plugins``: a generated name could import a real module with side effects.
KEYS = [key for key, _, _ in EXPERIMENT_KEYS] + ["name", "data.languages", "vote.tie",
                                                  "generator.backend", "align.lora",
                                                  "data.source", "evaluation.metrics"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["5e-6", "1E-3", ".inf", "-.nan", "0x10", "1_000", "~",
                                     "[en, en]", "{a: 1}", "&a [*a]", "!!python/none ''"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


NUMBER_KEYS = {key for key, _, backend in EXPERIMENT_KEYS if backend is None}


def _at(experiment: Experiment, key: str):
    value = experiment
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _written(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_generated_configs_load_or_fail_with_an_input_error(tmp_path_factory, values):
    """Refused: one line naming a generated key (``name: x`` alone loads). Loaded: a number
    given to a numeric key is the number the experiment holds."""
    import yaml

    from tests import hostile_cases as hc

    data: dict = {"name": "x"}
    for key, value in values.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[last] = value
    path = tmp_path_factory.mktemp("gen") / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        loaded = load_experiment(path)
    except InputError as err:  # each error of the file one line, each naming a given key
        for one in flatten([err]):
            assert "\n" not in str(one)
            assert hc.names_a_changed_key(one, data, {"name": "x"}), str(one)
        assert str(err).splitlines() == [str(one) for one in flatten([err])]
        return
    given = {key: value for key, value in values.items() if key in NUMBER_KEYS
             and isinstance(value, int | float) and not isinstance(value, bool)
             and _written(data, key) == value}  # not dropped under a scalar parent
    assert {key: _at(loaded, key) for key in given} == given


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.text(alphabet="abn: -[]{}&*!,'\"#\n\t.5e", max_size=60))
def test_generated_yaml_text_parses_or_fails_with_an_input_error(text):
    try:
        parse_yaml(text)
    except InputError:
        pass


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.sampled_from(KEYS), st.text(max_size=15) | st.sampled_from(["1", "0.5"]))
def test_generated_overrides_load_or_fail_with_an_input_error(tmp_path_factory, key, raw):
    """Refused: one line naming the --set and its key. Loaded: a plain number given to a
    numeric key is the number the experiment holds."""
    path = tmp_path_factory.mktemp("set") / "exp.yaml"
    path.write_text("name: x\n", encoding="utf-8")
    try:
        loaded = load_experiment(path, [f"{key}={raw}"])
    except InputError as err:
        assert "\n" not in str(err)
        assert str(err).startswith("--set ") and (err.field or "").startswith(
            key.split(".")[0]), str(err)
        return
    if key in NUMBER_KEYS and re.fullmatch(r"\s*\d+(\.\d+)?\s*", raw):
        assert _at(loaded, key) == float(raw)


def test_a_missing_local_model_fails_at_load_but_a_served_name_does_not(tmp_path):
    body = "name: x\ngenerator:\n  backend: {b}\n  model: {m}\n"
    with pytest.raises(InputError) as err:
        load_experiment(write(tmp_path, body.format(b="hf", m=tmp_path / "nope")))
    assert (err.value.field, err.value.line) == ("generator.model", 4)
    served = load_experiment(write(tmp_path, body.format(b="openai", m="/models/llama")))
    assert served.generator.model == "/models/llama"
