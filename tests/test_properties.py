"""Property tests for issues 16 and 22: a generated input is read to the right values or
refused with an InputError naming the file and line (never another exception, never a
silent wrong result), and writing outputs never touches a file calm_rag did not create.

The inputs come from hypothesis (random bytes, mutated valid files, random JSON values in every
field, random config mappings over the real keys, random folders of user files); the valid
files they start from, and the oracles that decide what each reader must make of an input
(standard-library parsing plus the record rules written out by hand), are in
``tests/hostile_cases.py``.
"""

from __future__ import annotations

import codecs
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
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from calm_rag.errors import InputError
from calm_rag.io import MARKER
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


# --- (a) every reader: the oracle's records, or InputError naming the file and line -------

def assert_verdict(read: Callable[[Path], Any], path: Path, oracle: Callable[[], Any]) -> None:
    """The reader agrees with its oracle (``hc.check_verdict``); the verdict is counted
    (``--hypothesis-show-statistics``) so both kinds of input are seen to be drawn."""
    event(hc.check_verdict(read, path, oracle))


def _jsonl_readers() -> dict[str, tuple[Callable[[Path], Any], Callable[[bytes], Any],
                                        list[dict]]]:
    """name → (reader as comparable values, its oracle, the valid rows mutated)."""
    from calm_rag.commands.export import read_pairs
    from calm_rag.datasets.samples import read_samples
    from calm_rag.datasets.trl import read_trl_rows
    from calm_rag.io import read_jsonl
    from calm_rag.retrieval.corpora import read_corpus

    return {
        "io.read_jsonl": (lambda p: list(read_jsonl(p)), lambda raw: list(hc.jsonl_oracle(raw)),
                          hc.sample_rows()),
        "samples": (lambda p: [s.to_dict() for s in read_samples(p)], hc.samples_oracle,
                    hc.sample_rows()),
        "pairs": (lambda p: [pair.to_dict() for pair in read_pairs(p)], hc.pairs_oracle,
                  hc.pair_rows()),
        "trl": (read_trl_rows, hc.trl_oracle,
                [{"prompt": "p", "chosen": "c", "rejected": "r"},
                 {"prompt": [{"role": "user", "content": "p"}],
                  "chosen": [{"role": "assistant", "content": "c"}],
                  "rejected": [{"role": "assistant", "content": "r"}]}]),
        "corpus-jsonl": (lambda p: [d.to_dict() for d in read_corpus("jsonl", p)],
                         lambda raw: hc.corpus_oracle(raw, "input.jsonl"), hc.corpus_rows()),
    }


JSONL_READERS = sorted(_jsonl_readers())


def valid_jsonl(rows: list[dict]) -> st.SearchStrategy[bytes]:
    """Files the readers must read whole: a non-empty prefix of ``rows``, with blank lines,
    CRLF endings, a BOM or no final newline."""
    def render(t: tuple[int, bool, bool, bool, bool]) -> bytes:
        count, blank, crlf, bom, last_newline = t
        end = "\r\n" if crlf else "\n"
        text = ("  " + end if blank else "").join(json.dumps(r) + end for r in rows[:count])
        text = text if last_newline else text.rstrip("\r\n")
        return (codecs.BOM_UTF8 if bom else b"") + text.encode()

    return st.tuples(st.integers(1, len(rows)), st.booleans(), st.booleans(), st.booleans(),
                     st.booleans()).map(render)


@pytest.mark.parametrize("reader", JSONL_READERS)
@SETTINGS
@given(data=st.data())
def test_jsonl_readers_on_malformed_bytes(reader, data):
    read, oracle, rows = _jsonl_readers()[reader]
    raw = data.draw(mutated_bytes(hc.jsonl(rows)) | valid_jsonl(rows)
                    | st.just(DEEP_JSON.encode()))
    with scratch() as folder:
        path = folder / "input.jsonl"
        path.write_bytes(raw)
        assert_verdict(read, path, lambda: oracle(raw))


@pytest.mark.parametrize("reader", JSONL_READERS)
@SETTINGS
@given(data=st.data())
def test_jsonl_readers_on_wrong_field_types(reader, data):
    read, oracle, rows = _jsonl_readers()[reader]
    broken = data.draw(broken_records(rows))
    with scratch() as folder:
        path = folder / "input.jsonl"
        raw = dump_jsonl(broken)
        path.write_bytes(raw)
        assert_verdict(read, path, lambda: oracle(raw))


@pytest.mark.parametrize("reader", JSONL_READERS)
def test_jsonl_readers_read_the_valid_rows_and_refuse_a_bad_line(reader, tmp_path):
    """Both verdicts on fixed files, so neither rests on what hypothesis happens to draw."""
    read, oracle, rows = _jsonl_readers()[reader]
    path = tmp_path / "input.jsonl"
    raw = dump_jsonl(rows)
    path.write_bytes(raw)
    assert oracle(raw) and read(path) == oracle(raw)
    path.write_bytes(raw + b'{"x": 1,}\n')
    with pytest.raises(InputError) as err:
        read(path)
    assert (Path(err.value.path), err.value.line) == (path, len(rows) + 1)


@SETTINGS
@given(raw=mutated_bytes(json.dumps(hc.built_manifest())) | st.just(
    json.dumps(hc.built_manifest(), indent=1).encode()))
@example(raw=DEEP_JSON.encode())
@example(raw=json.dumps(hc.built_manifest()).encode())
def test_read_json_and_manifest_on_malformed_bytes(raw):
    from calm_rag.io import read_json
    from calm_rag.retrieval.manifest import read_manifest

    with scratch() as folder:
        path = folder / "manifest.json"
        path.write_bytes(raw)
        assert_verdict(read_json, path, lambda: hc.json_document_oracle(raw))
        assert_verdict(lambda p: read_manifest(p.parent), path, lambda: hc.manifest_oracle(raw))


def _calm_values(path: Path) -> list[dict]:
    from calm_rag.datasets.calm import read_calm_samples

    return [{"question_id": s.question.id, "lang": s.lang, "text": s.text, "index": s.index,
             "gold": s.question.answer} for s in read_calm_samples(path)]


@SETTINGS
@given(raw=mutated_bytes(json.dumps(hc.calm_items())) | broken_records(hc.calm_items()).map(
    lambda rows: json.dumps(rows).encode()))
@example(raw=b"[1, 2, 3]")
@example(raw=json.dumps(hc.calm_items(), indent=1).encode())
def test_calm_reader_on_malformed_files(raw):
    with scratch() as folder:
        path = folder / "x_csqa_en_test_sampled.json"
        path.write_bytes(raw)
        assert_verdict(_calm_values, path, lambda: hc.calm_oracle(raw))


@pytest.mark.parametrize("kind", ["text", "medqa-textbooks"])
@SETTINGS
@given(raw=mutated_bytes("Doctors work in hospitals.\n"))
@example(raw=b"\xef\xbb\xbfDoctors work in hospitals.\n")
def test_text_corpus_readers_on_malformed_bytes(kind, raw):
    """A text file is one document holding its text (read as UTF-8), or refused: at the
    file's faulty line, or as a corpus without text when it holds only whitespace."""
    from calm_rag.retrieval.corpora import read_corpus

    with scratch() as folder:
        (folder / "texts" / "en").mkdir(parents=True)  # medqa-textbooks reads en/*.txt
        file = folder / "texts" / "en" / "a.txt"
        file.write_bytes(raw)
        try:
            text = hc.text_oracle(raw)
        except hc.Refused as refused:
            event("refused")
            with pytest.raises(InputError) as err:
                list(read_corpus(kind, folder / "texts"))
            assert (Path(err.value.path), err.value.line) == (file, refused.line)
            return
        if not text.strip():
            event("refused")
            with pytest.raises(InputError, match="no document with text") as err:
                list(read_corpus(kind, folder / "texts"))
            assert Path(err.value.path) == folder / "texts"
            return
        event("read")
        [doc] = read_corpus(kind, folder / "texts")
        assert (doc.id, doc.title, doc.text) == ("en/a", "a", text)
        if kind == "medqa-textbooks":
            assert doc.lang == "en"  # the folder says so, whatever the text looks like


def _yaml_values(loader: str, loaded: Any) -> dict:
    if loader == "experiment":
        return {"name": loaded.name, "languages": list(loaded.data.languages),
                "train": loaded.data.train, "heldout": loaded.data.heldout,
                "backend": loaded.generator.backend, "retrieval": loaded.retrieval.enabled}
    return {"name": loaded.name, "chunk_size": loaded.chunking.chunk_size,
            "chunk_overlap": loaded.chunking.chunk_overlap,
            "batch_size": loaded.embedder.batch_size}


YAML_BASES: dict[str, tuple[dict, dict]] = {
    # the mapping a loader is given, and the values it must load from it
    "experiment": (hc.experiment(), {"name": "probe", "languages": ["en", "zh"], "train": 2,
                                     "heldout": 1, "backend": "hf", "retrieval": False}),
    "spec": (hc.spec(), {"name": "probe-index", "chunk_size": 128, "chunk_overlap": 16,
                         "batch_size": 8}),
}


@pytest.mark.parametrize("loader", sorted(YAML_BASES))
@SETTINGS
@given(data=st.data())
def test_yaml_loaders_on_malformed_bytes(loader, data):
    """The oracle is PyYAML: what it cannot parse is refused naming the file; what it parses
    to the valid mapping loads to the valid values; anything else may go either way."""
    from calm_rag.experiment import load_experiment
    from calm_rag.retrieval.spec import load_spec

    base, values = YAML_BASES[loader]
    text = hc.to_yaml(base)
    valid = st.sampled_from([text.encode(), codecs.BOM_UTF8 + text.encode(),
                             text.replace("\n", "\r\n").encode()])
    raw = data.draw(mutated_bytes(text) | valid | st.just(DEEP_YAML.encode()))
    load = load_experiment if loader == "experiment" else load_spec
    with scratch() as folder:
        path = folder / "exp.yaml"
        path.write_bytes(raw)
        try:
            parsed = yaml.safe_load(raw.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
            event("refused")
            with pytest.raises(InputError) as err:
                load(path)
            assert Path(err.value.path) == path, str(err.value)
            return
        if parsed == base:
            event("read")
            assert _yaml_values(loader, load(path)) == values
        else:
            event("either")
            try:
                load(path)
            except InputError as err:
                assert Path(err.path) == path, str(err)


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


def _load_mapping(mapping: dict) -> Any:
    """The experiment loaded from ``mapping``, or the InputError that refused it."""
    from calm_rag.experiment import load_experiment

    with scratch() as folder:
        path = folder / "exp.yaml"
        path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
        try:
            return load_experiment(path)
        except InputError as err:
            return err


# Valid values per key, as the manual (``calm-rag run --describe``) states their ranges.
VALID_VALUES: dict[str, st.SearchStrategy] = {
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,11}", fullmatch=True),
    "data.train": st.integers(1, 10_000),
    "data.heldout": st.integers(0, 10_000),
    "data.seed": st.integers(0, 2**32 - 1),
    "data.languages": st.lists(st.sampled_from(["en", "zh", "fr", "de", "it", "ja"]),
                               min_size=1, max_size=4, unique=True),
    "sampling.n": st.integers(1, 16),
    "sampling.temperature": st.floats(0, 100),
    "sampling.top_p": st.floats(0, 1, exclude_min=True),
    "vote.min_agreement": st.floats(0, 1),
    "vote.tie": st.sampled_from(["drop", "first-seen"]),
    "align.beta": st.floats(0, 100, exclude_min=True),
    "align.learning_rate": st.floats(0, 1, exclude_min=True),
    "align.lora.r": st.integers(1, 256),
    "align.lora.dropout": st.floats(0, 1, exclude_max=True),
    "retrieval.k": st.integers(1, 100),
}


def numeric_keys() -> list[str]:
    """The int and float keys of the experiment (each refuses -1, text, lists, mappings)."""
    from calm_rag.experiment import describe

    found = (line.split(" (")[0] for line in describe()
             if " (int, " in line or " (float, " in line)
    return [key for key in found if not key.startswith("generator.")]  # those need a backend


INVALID_VALUES = st.sampled_from([-1, "abc", [1, 2], {"x": 1}, True])


def invalid_change() -> st.SearchStrategy[tuple[str, Any]]:
    """One key set to a value it cannot take: a numeric key out of its type or range, or a
    key that does not exist (in a group, or at the top)."""
    wrong = st.tuples(st.sampled_from(numeric_keys()), INVALID_VALUES)
    groups = st.sampled_from(["", "data.", "sampling.", "vote.", "align.", "align.lora."])
    unknown = st.tuples(st.tuples(groups, st.from_regex(r"zz[a-z_]{0,5}", fullmatch=True)).map(
        "".join), json_values)
    return wrong | unknown


def _loaded(experiment: Any, key: str) -> Any:
    value = experiment
    for part in key.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


@settings(SETTINGS, max_examples=100)
@given(valid=st.dictionaries(st.sampled_from(sorted(VALID_VALUES)), st.none(), max_size=5)
       .flatmap(lambda keys: st.fixed_dictionaries({k: VALID_VALUES[k] for k in keys})),
       bad=st.none() | invalid_change())
def test_config_loader_returns_an_experiment_or_input_error(valid, bad):
    """Valid values load as given; one invalid value is refused naming its key and line."""
    mapping = hc.experiment()
    for key, value in valid.items():
        mapping = hc.set_yaml_key(mapping, key, value)
    if bad is not None:
        mapping = hc.set_yaml_key(mapping, *bad)
    with scratch() as folder:
        from calm_rag.experiment import load_experiment

        path = folder / "exp.yaml"
        path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
        if bad is None:
            event("read")
            experiment = load_experiment(path)
            assert {key: _loaded(experiment, key) for key in valid} == valid
            return
        event("refused")
        with pytest.raises(InputError) as err:
            load_experiment(path)
        assert (err.value.field, Path(err.value.path)) == (bad[0], path), str(err.value)
        assert err.value.line is not None


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
    """Accepted: every number finite and not negative. Refused: the error names a key the
    generator changed (or a group or key within one), since the base mapping loads."""
    experiment = _load_mapping(mapping)
    if isinstance(experiment, InputError):
        assert hc.names_a_changed_key(experiment, mapping, hc.experiment()), str(experiment)
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
PAIR_LANGS = ("en", "zh", "fr")  # the languages of hc.pair_rows(); the first row's is drawn
pair_langs = st.sampled_from([*PAIR_LANGS, "../victim", "../../victim", "a/b"])


def expected_outputs(command: str, first_lang: str) -> set[str]:
    """The files a command writes into --out (the first pair's language drawn)."""
    if command == "vote":
        return {"votes.jsonl", "pairs.jsonl", "samples.jsonl", "summary.json"}
    if command == "export-trl":
        return {"dpo.jsonl"}
    return {f"DPO_{lang}.json" for lang in {first_lang, *PAIR_LANGS[1:]}} | {"dataset_info.json"}


def _json_object(path: Path) -> bool:
    try:
        return path.is_file() and isinstance(json.loads(path.read_bytes()), dict)
    except ValueError:
        return False


# Users' files named like the outputs too, so that collisions are drawn.
output_names = st.sampled_from(sorted({name for c in WRITE_COMMANDS for lang in PAIR_LANGS
                                       for name in expected_outputs(c, lang)}))
colliding_trees = st.dictionaries(
    st.lists(safe_names | output_names, min_size=1, max_size=2).map("/".join),
    st.binary(max_size=40) | st.just(b'{"mine": {}}'), min_size=1, max_size=5)


@pytest.mark.parametrize("command", sorted(WRITE_COMMANDS))
@SETTINGS
@given(tree=user_trees | colliding_trees, lang=pair_langs)
def test_outputs_never_touch_user_files(command, tree, lang):
    """Exit 0 with every output written when the input is valid and no user file bears an
    output's name (a JSON object named dataset_info.json is merged into); else exit 2 and
    nothing written. Either way no user file changes (a merged file keeps its entries)."""
    from calm_rag.cli import main

    with scratch() as root:
        src, out = root / "src", root / "parent" / "out"
        src.mkdir()
        (src / "samples.jsonl").write_bytes(hc.jsonl(hc.sample_rows()).encode())
        pairs = [{**hc.pair_row(), "lang": lang}, *hc.pair_rows()[1:]]
        (src / "pairs.jsonl").write_bytes(hc.jsonl(pairs).encode())
        out.mkdir(parents=True)
        planted = plant(out, tree)
        before = {p.name for p in out.iterdir()}
        beside = {"victim.json": b"mine", "DPO_en.json": b"mine"}  # targets of ../ names
        for name, content in beside.items():
            (out.parent / name).write_bytes(content)
        outputs = expected_outputs(command, lang)
        merged = {"dataset_info.json"} & outputs if _json_object(out / "dataset_info.json") \
            else set()
        succeeds = ((command == "vote" or lang in PAIR_LANGS)
                    and not (before & outputs) - merged)
        user_info = json.loads((out / "dataset_info.json").read_bytes()) if merged else {}
        with contextlib.redirect_stdout(open(os.devnull, "w")), \
                contextlib.redirect_stderr(open(os.devnull, "w")):
            code = main(WRITE_COMMANDS[command](src, out))
        event(f"exit {code}")
        assert code == (0 if succeeds else 2)
        now = {p.name for p in out.iterdir()}
        if succeeds:
            assert now == before | outputs | {MARKER}
            info = json.loads((out / "dataset_info.json").read_bytes()) if merged else {}
            assert all(info[key] == value for key, value in user_info.items())
            planted = {n: d for n, d in planted.items() if n not in merged}
        else:
            assert now == before, "a refused command wrote into --out"
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
