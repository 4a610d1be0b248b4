"""Generated hostile inputs: every reader ends in a value or an InputError, never another
exception, and the output writer never touches a file it did not write."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_rag.datasets.calm import read_calm_samples
from calm_rag.datasets.samples import read_samples
from calm_rag.datasets.trl import read_trl_rows
from calm_rag.errors import InputError
from calm_rag.io import MARKER, output_folder, read_json, read_json_array, read_jsonl
from calm_rag.records import PreferencePair, Sample, Vote

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# Bytes that look like JSON often enough to get past the decoder into the parser.
JSONISH = st.text(alphabet='[]{}":,\\ud800-\\udfff0123456789.eEaNIn tf\n\r\t\u00e9\x00',
                  max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass"))
RAW = st.one_of(st.binary(max_size=300), JSONISH,
                st.text(max_size=200).map(lambda s: s.encode("utf-16")))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20)


def _ends_well(read, path: Path) -> None:
    try:
        result = read(path)
        if hasattr(result, "__next__"):
            list(result)
    except InputError:
        pass


@FAST
@given(data=RAW)
def test_readers_on_any_bytes(data):
    with tempfile.TemporaryDirectory() as folder:
        for name, read in (("x.jsonl", read_jsonl), ("x.json", read_json),
                           ("a.json", read_json_array), ("s.jsonl", read_samples),
                           ("x_csqa_en_train_sampled.json", read_calm_samples),
                           ("t.jsonl", read_trl_rows)):
            path = Path(folder) / name
            path.write_bytes(data)
            _ends_well(read, path)


def _sample_like(value) -> dict:
    return {"question": {"id": "q", "lang": "en", "stem": "s", "options": {"A": "a"}},
            "text": "t", "index": 0, "setting": "zero-shot"} | value


@FAST
@given(fields=st.dictionaries(st.sampled_from(["text", "index", "setting", "answer",
                                                "extraction", "instruction", "input",
                                                "question"]), JSON_VALUES, max_size=3))
def test_record_readers_on_any_json(fields):
    for parse, obj in ((Sample.from_dict, _sample_like(fields)), (PreferencePair.from_dict, fields),
                       (Vote.from_dict, fields)):
        try:
            record = parse(obj, path="x.jsonl", line=1)
        except InputError:
            continue
        json.dumps(record.to_dict())  # what was accepted is typed and writes back


@FAST
@given(names=st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_the_writer_keeps_inside_and_touches_no_user_file(names):
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / "out"
        out.mkdir()
        (out / "user.txt").write_text("mine")
        (Path(root) / "outside.txt").write_text("mine too")
        before = {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}
        written = []
        try:
            with output_folder(out) as folder:
                for name in names:
                    folder.path(name).write_text("ours")
                    written.append(name)
        except InputError:
            written = []
        after = {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}
        assert {p: after.get(p) for p in before} == before
        assert set(after) - set(before) <= {out / n for n in [*written, MARKER]}


@pytest.mark.parametrize("depth", [10, 63, 65, 900, 5000])
def test_nesting_bound(tmp_path, depth):
    (tmp_path / "x.json").write_text("[" * depth + "]" * depth)
    if depth <= 64:
        assert read_json(tmp_path / "x.json") is not None
    else:
        with pytest.raises(InputError, match="nested more than"):
            read_json(tmp_path / "x.json")
