"""Property tests for issue 16: generated malformed input ends in success or InputError, never
another exception, and writing outputs never touches a file calm_rag did not create.

The inputs come from hypothesis (random bytes, mutated valid files, random JSON values in every
field, random config mappings over the real keys, random folders of user files); the valid
files they start from are in ``tests/hostile_cases.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from calm_rag.errors import InputError
from tests import hostile_cases as hc

# No shrinking: a failing property reports its first example at once (shrinking would
# spend most of a minute), and derandomize keeps runs repeatable.
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])
DEEP_JSON = "[" * hc.DEPTH + "]" * hc.DEPTH
DEEP_YAML = hc.deep_yaml()


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per generated example (pytest's tmp_path is shared across examples)."""
    with tempfile.TemporaryDirectory(prefix="calm-prop-") as folder:
        yield Path(folder)


def read_or_refuse(read: Callable[[], Any]) -> str:
    """Run a reader: ``read`` or ``refused`` (InputError). Any other exception propagates,
    which is the failure these properties look for."""
    try:
        result = read()
        if isinstance(result, Iterator):
            list(result)
    except InputError:
        return "refused"
    return "read"


# --- strategies ----------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8)
                | st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=8)


def mutated_bytes(valid: str) -> st.SearchStrategy[bytes]:
    """Bytes that started as ``valid``: re-encoded, truncated, spliced with random bytes, or
    random bytes outright."""
    data = valid.encode()
    encoded = st.sampled_from(sorted(hc.ENCODINGS)).map(lambda name: hc.ENCODINGS[name](valid))
    truncated = st.integers(0, len(data)).map(lambda i: data[:i])
    spliced = st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=6)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0]:])
    return st.one_of(encoded, truncated, spliced, st.binary(max_size=200))


def broken_records(rows: list[dict]) -> st.SearchStrategy[list[dict]]:
    """``rows`` with one field (nested ones included) set to a random JSON value or removed."""
    paths = hc.field_paths(rows[0])
    value = json_values | st.just(hc.MISSING)
    return st.tuples(st.integers(0, len(rows) - 1), st.sampled_from(paths), value).map(
        lambda t: [hc.set_path(r, t[1], t[2]) if i == t[0] else r for i, r in enumerate(rows)])


def dump_jsonl(rows: list[Any]) -> bytes:
    # ensure_ascii: lone surrogates from st.text() become \ud800 escapes, as a hostile file has
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# --- (a) every reader: success or InputError -----------------------------------------------

def _jsonl_readers() -> dict[str, tuple[Callable[[Path], Any], list[dict]]]:
    from calm_rag.commands.export import read_pairs
    from calm_rag.datasets.samples import read_samples
    from calm_rag.datasets.trl import read_trl_rows
    from calm_rag.io import read_jsonl
    from calm_rag.retrieval.corpora import read_corpus

    return {
        "io.read_jsonl": (read_jsonl, hc.sample_rows()),
        "samples": (read_samples, hc.sample_rows()),
        "pairs": (read_pairs, hc.pair_rows()),
        "trl": (read_trl_rows, [{"prompt": "p", "chosen": "c", "rejected": "r"}]),
        "corpus-jsonl": (lambda p: read_corpus("jsonl", p), hc.corpus_rows()),
    }


JSONL_READERS = sorted(_jsonl_readers())



@pytest.mark.parametrize("reader", JSONL_READERS)
@SETTINGS
@given(data=st.data())
def test_jsonl_readers_on_malformed_bytes(reader, data):
    read, rows = _jsonl_readers()[reader]
    raw = data.draw(mutated_bytes(hc.jsonl(rows)) | st.just(DEEP_JSON.encode()))
    with scratch() as folder:
        path = folder / "input.jsonl"
        path.write_bytes(raw)
        read_or_refuse(lambda: read(path))


@pytest.mark.parametrize("reader", JSONL_READERS)
@SETTINGS
@given(data=st.data())
def test_jsonl_readers_on_wrong_field_types(reader, data):
    read, rows = _jsonl_readers()[reader]
    broken = data.draw(broken_records(rows))
    with scratch() as folder:
        path = folder / "input.jsonl"
        path.write_bytes(dump_jsonl(broken))
        read_or_refuse(lambda: read(path))


@SETTINGS
@given(raw=mutated_bytes(json.dumps(hc.manifest())))
@example(raw=DEEP_JSON.encode())
def test_read_json_and_manifest_on_malformed_bytes(raw):
    from calm_rag.io import read_json
    from calm_rag.retrieval.manifest import read_manifest

    with scratch() as folder:
        (folder / "manifest.json").write_bytes(raw)
        read_or_refuse(lambda: read_json(folder / "manifest.json"))
        read_or_refuse(lambda: read_manifest(folder))


@SETTINGS
@given(raw=mutated_bytes(json.dumps(hc.calm_items())) | broken_records(hc.calm_items()).map(
    lambda rows: json.dumps(rows).encode()))
@example(raw=b"[1, 2, 3]")
def test_calm_reader_on_malformed_files(raw):
    from calm_rag.datasets.calm import read_calm_samples

    with scratch() as folder:
        path = folder / "x_csqa_en_test_sampled.json"
        path.write_bytes(raw)
        read_or_refuse(lambda: read_calm_samples(path))


@pytest.mark.parametrize("kind", ["text", "medqa-textbooks"])
@SETTINGS
@given(raw=mutated_bytes("Doctors work in hospitals.\n"))
def test_text_corpus_readers_on_malformed_bytes(kind, raw):
    from calm_rag.retrieval.corpora import read_corpus

    with scratch() as folder:
        (folder / "texts" / "en").mkdir(parents=True)  # medqa-textbooks reads en/*.txt
        (folder / "texts" / "en" / "a.txt").write_bytes(raw)
        read_or_refuse(lambda: read_corpus(kind, folder / "texts"))


@pytest.mark.parametrize("loader", ["experiment", "spec"])
@SETTINGS
@given(raw=mutated_bytes(hc.to_yaml(hc.experiment())))
@example(raw=DEEP_YAML.encode())
def test_yaml_loaders_on_malformed_bytes(loader, raw):
    from calm_rag.experiment import load_experiment
    from calm_rag.retrieval.spec import load_spec

    load = load_experiment if loader == "experiment" else load_spec
    with scratch() as folder:
        (folder / "exp.yaml").write_bytes(raw)
        read_or_refuse(lambda: load(folder / "exp.yaml"))


def test_yaml_alias_bomb_is_refused_within_seconds(tmp_path):
    """In a child process with a memory cap: the bomb must not hang or exhaust this one."""
    (tmp_path / "bomb.yaml").write_text(hc.alias_bomb())
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from calm_rag.errors import InputError\n"
            "from calm_rag.experiment import load_experiment\n"
            "try:\n    load_experiment(sys.argv[1])\n"
            "except InputError:\n    sys.exit(2)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bomb.yaml")],
                              capture_output=True, timeout=10, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("loading the alias bomb ran past 10 s")
    assert proc.returncode == 2, proc.stderr.decode()[-500:]


# --- (b) the config loader: an Experiment or InputError ------------------------------------

def experiment_keys() -> list[str]:
    """Every dotted key of the experiment, from its own dataclasses."""
    from calm_rag.experiment import Experiment

    def walk(cls: type, prefix: str) -> Iterator[str]:
        import typing

        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            yield prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]):
                yield from walk(hints[f.name], f"{prefix}{f.name}.")

    return list(walk(Experiment, ""))


config_values = json_values | st.sampled_from([-1, 0, 1, 2**63, 5e-6, "5e-6", "en", [], {}])


def config_mappings() -> st.SearchStrategy[dict]:
    keys = st.sampled_from(experiment_keys()) | st.text(max_size=6)
    changes = st.dictionaries(keys, config_values, max_size=4)
    return changes.map(lambda c: _apply(hc.experiment(), c))


def _apply(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        with contextlib.suppress(AttributeError, TypeError):  # a group replaced by a scalar
            base = hc.set_yaml_key(base, key, value)
    return base


def _load_mapping(mapping: dict):
    from calm_rag.experiment import load_experiment

    with scratch() as folder:
        path = folder / "exp.yaml"
        path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
        try:
            return load_experiment(path)
        except InputError:
            return None


@settings(SETTINGS, max_examples=100)
@given(mapping=config_mappings())
def test_config_loader_returns_an_experiment_or_input_error(mapping):
    _load_mapping(mapping)


def _numbers(value: Any) -> Iterator[tuple[str, float]]:
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            for key, number in _numbers(getattr(value, f.name)):
                yield f"{f.name}.{key}".rstrip("."), number
    elif isinstance(value, dict):
        for k, v in value.items():
            for key, number in _numbers(v):
                yield f"{k}.{key}".rstrip("."), number
    elif isinstance(value, float | int) and not isinstance(value, bool):
        yield "", value


@SETTINGS
@given(mapping=config_mappings())
@example(mapping=hc.set_yaml_key(hc.experiment(), "align.learning_rate", math.inf))
@example(mapping=hc.set_yaml_key(hc.experiment(), "align.seed", -1))
def test_accepted_configs_hold_only_finite_non_negative_numbers(mapping):
    experiment = _load_mapping(mapping)
    if experiment is None:
        return
    for key, number in _numbers(experiment):
        assert math.isfinite(number), f"{key} = {number} was accepted"
        assert number >= 0, f"{key} = {number} was accepted"


def test_duplicate_yaml_key_is_refused(tmp_path):
    from calm_rag.experiment import load_experiment

    (tmp_path / "exp.yaml").write_text(hc.to_yaml(hc.experiment()) + "name: again\n")
    with pytest.raises(InputError):
        load_experiment(tmp_path / "exp.yaml")


# --- (c) writers never touch a file they did not create ------------------------------------

safe_names = st.text("abcdefghij_-.0123456789", min_size=1, max_size=10).filter(
    lambda n: n not in (".", ".."))
user_trees = st.dictionaries(st.lists(safe_names, min_size=1, max_size=2).map("/".join),
                             st.binary(max_size=40), min_size=1, max_size=5)


def plant(folder: Path, tree: dict[str, bytes]) -> dict[str, str]:
    """Write the user's files; return name → SHA-256 of what was actually planted."""
    for name, content in tree.items():
        path = folder / name
        with contextlib.suppress(OSError):  # a name that is also another file's folder
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return digests(folder)


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def assert_untouched(planted: dict[str, str], folder: Path) -> None:
    now = digests(folder)
    lost = sorted(name for name, digest in planted.items() if now.get(name) != digest)
    assert not lost, f"user files lost or changed: {lost}"


WRITE_COMMANDS = {
    "vote": lambda src, out: ["vote", str(src / "samples.jsonl"), "--out", str(out)],
    "export-trl": lambda src, out: ["export", str(src / "pairs.jsonl"), "--format", "trl",
                                    "--out", str(out)],
    "export-llamafactory": lambda src, out: ["export", str(src / "pairs.jsonl"), "--format",
                                             "llamafactory", "--out", str(out)],
}
pair_langs = st.sampled_from(["en", "zh", "fr", "../victim", "../../victim", "a/b"])


@pytest.mark.parametrize("command", sorted(WRITE_COMMANDS))
@SETTINGS
@given(tree=user_trees, lang=pair_langs)
def test_outputs_never_touch_user_files(command, tree, lang):
    from calm_rag.cli import main

    with scratch() as root:
        src, out = root / "src", root / "parent" / "out"
        src.mkdir()
        (src / "samples.jsonl").write_bytes(hc.jsonl(hc.sample_rows()).encode())
        pairs = [{**hc.pair_row(), "lang": lang}, *hc.pair_rows()[1:]]
        (src / "pairs.jsonl").write_bytes(hc.jsonl(pairs).encode())
        out.mkdir(parents=True)
        planted = plant(out, tree)
        beside = {"victim.json": b"mine", "DPO_en.json": b"mine"}  # targets of ../ names
        for name, content in beside.items():
            (out.parent / name).write_bytes(content)
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            main(WRITE_COMMANDS[command](src, out))
        assert_untouched(planted, out)
        changed = [n for n, c in beside.items() if (out.parent / n).read_bytes() != c]
        assert not changed, f"files beside --out changed: {changed}"


@SETTINGS
@given(tree=user_trees, name=safe_names, fail=st.booleans())
def test_atomic_write_touches_only_its_own_file(tree, name, fail):
    from calm_rag.io import atomic_write

    with scratch() as folder:
        planted = plant(folder, tree)
        if name in planted:
            planted.pop(name)  # the one file the caller asked to (re)write
        with contextlib.suppress(RuntimeError, IsADirectoryError, NotADirectoryError):
            with atomic_write(folder / name) as handle:
                handle.write("ours\n")
                if fail:
                    raise RuntimeError("the block fails")
        assert_untouched(planted, folder)
        left = [p for p in folder.rglob(f".{Path(name).name}.*.tmp")]
        assert not left, f"a temp file was left behind: {left}"


@SETTINGS
@given(tree=user_trees)
def test_index_build_never_replaces_a_users_folder(tree):
    """``--force`` rebuilds replace an index whole, so a folder of the user's that bears the
    index's name is refused before anything is read or written."""
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.spec import load_spec

    with scratch() as root:
        out = root / "indexes" / "probe"
        out.mkdir(parents=True)
        planted = plant(out, tree)
        spec = root / "probe.yaml"
        spec.write_text("name: probe\ncorpus:\n  - {type: jsonl, path: nowhere.jsonl}\n")
        with pytest.raises(InputError, match="not an index built by calm-rag"):
            build_index(load_spec(spec), root / "indexes", force=True)
        assert_untouched(planted, out)
