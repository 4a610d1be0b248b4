"""Generated hostile inputs: every reader returns what its oracle (``tests/hostile_cases.py``)
reads from the same bytes, or an InputError naming the file and line, never another exception;
and the output writer never touches a file it did not write."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from calm_rag.datasets.calm import read_calm_samples
from calm_rag.datasets.samples import read_samples
from calm_rag.datasets.trl import read_trl_rows
from calm_rag.errors import InputError
from calm_rag.io import MARKER, output_folder, read_json, read_json_array, read_jsonl
from calm_rag.records import PreferencePair, Sample, Vote
from tests import hostile_cases as hc

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


# name → (the file name read, the reader as comparable values, its oracle)
READERS = {
    "read_jsonl": ("x.jsonl", lambda p: list(read_jsonl(p)),
                   lambda raw: list(hc.jsonl_oracle(raw))),
    "read_json": ("x.json", read_json, hc.json_document_oracle),
    "read_json_array": ("a.json", lambda p: [item for _, item in read_json_array(p)],
                        hc.json_array_oracle),
    "read_samples": ("s.jsonl", lambda p: [s.to_dict() for s in read_samples(p)],
                     hc.samples_oracle),
    "read_calm_samples": ("x_csqa_en_test_sampled.json", lambda p: [
        {"question_id": s.question.id, "lang": s.lang, "text": s.text, "index": s.index,
         "gold": s.question.answer} for s in read_calm_samples(p)], hc.calm_oracle),
    "read_trl_rows": ("t.jsonl", read_trl_rows, hc.trl_oracle),
}
VALID_FILES = {  # a valid input of each reader, so that both verdicts are drawn
    "read_jsonl": hc.jsonl(hc.sample_rows()), "read_json": json.dumps(hc.manifest()),
    "read_json_array": json.dumps(hc.calm_items(), indent=1),
    "read_samples": hc.jsonl(hc.sample_rows()),
    "read_calm_samples": json.dumps(hc.calm_items(), indent=1),
    "read_trl_rows": hc.jsonl([{"prompt": "p", "chosen": "c", "rejected": "r"}]),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@FAST
@given(data=st.data())
def test_readers_on_any_bytes(reader, data):
    name, read, oracle = READERS[reader]
    raw = data.draw(RAW | st.just(VALID_FILES[reader].encode()))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(raw)
        event(hc.check_verdict(read, path, lambda: oracle(raw)))


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_read_their_valid_file_and_name_a_broken_line(reader, tmp_path):
    """Both verdicts on fixed files: the valid file is read to the oracle's values (and to
    something), and a line cut short after it is refused naming that line."""
    name, read, oracle = READERS[reader]
    path = tmp_path / name
    raw = VALID_FILES[reader].encode()
    path.write_bytes(raw)
    assert oracle(raw) and hc.check_verdict(read, path, lambda: oracle(raw)) == "read"
    broken = raw.rstrip(b"\n")[:-1]  # the last closing bracket goes: the end is the fault
    path.write_bytes(broken)
    with pytest.raises(InputError) as err:
        read(path)
    assert (Path(err.value.path), err.value.line) == (path, broken.count(b"\n") + 1)


def _sample_like(value) -> dict:
    return {"question": {"id": "q", "lang": "en", "stem": "s", "options": {"A": "a"}},
            "text": "t", "index": 0, "setting": "zero-shot"} | value


VOTE = {"question_id": "q1", "setting": "zero-shot", "answer": "C", "status": "majority",
        "counts": {"C": 3, "A": 1}, "by_language": {"en": {"C": 2}, "zh": {"C": 1, "A": 1}},
        "n_responses": 4, "n_parsed": 4, "gold": "C"}
RECORDS = {  # name → (parse, a valid object the drawn fields replace keys of, the oracle)
    "sample": (Sample.from_dict, _sample_like({}), hc.sample_record),
    "pair": (PreferencePair.from_dict, hc.pair_row(), hc.pair_record),
    "vote": (Vote.from_dict, VOTE, hc.vote_record),
}
FIELDS = sorted({"text", "index", "setting", "answer", "extraction", "instruction", "input",
                 "question", "lang", "chosen", "vote_counts", "extra", "counts", "by_language",
                 "n_parsed", "gold", "surprise"})


@pytest.mark.parametrize("kind", sorted(RECORDS))
@FAST
@given(fields=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=3))
def test_record_readers_on_any_json(kind, fields):
    """A record is what the oracle makes of the object (``to_dict`` equal), or refused
    naming x.jsonl:1; what is accepted writes back as JSON."""
    parse, valid, oracle = RECORDS[kind]
    obj = valid | fields
    verdict = hc.check_verdict(lambda path: parse(obj, path=path, line=1).to_dict(),
                               "x.jsonl", lambda: oracle(obj, 1))
    event(verdict)
    if verdict == "read":
        json.dumps(parse(obj, path="x.jsonl", line=1).to_dict())


def plain_names(names: list[str]) -> bool:
    """The oracle of the writer: plain file names (a letter or digit, then letters, digits
    and ``._+-``; no ``..``; not the marker), each once."""
    import re

    return len(set(names)) == len(names) and all(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}", n) and ".." not in n
        and n != MARKER for n in names)


@FAST
@given(names=st.lists(st.text(max_size=12), min_size=1, max_size=4)
       | st.lists(st.from_regex(r"[a-z0-9][a-z.]{0,6}", fullmatch=True), min_size=1,
                  max_size=4))
def test_the_writer_keeps_inside_and_touches_no_user_file(names):
    """Plain names, each once, are all written ("ours" in each); any other list is refused
    with nothing written; files beside the folder and the user's own never change."""
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / "out"
        out.mkdir()
        (out / "user.txt").write_text("mine")
        (Path(root) / "outside.txt").write_text("mine too")
        before = {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}
        valid = plain_names(names) and "user.txt" not in names
        event("read" if valid else "refused")
        written = []
        try:
            with output_folder(out) as folder:
                for name in names:
                    folder.path(name).write_text("ours")
                    written.append(name)
        except InputError:
            assert not valid, f"{names} were refused"
            written = []
        else:
            assert valid, f"{names} were written"
            assert all((out / n).read_text() == "ours" for n in names)
        after = {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}
        assert {p: after.get(p) for p in before} == before
        assert set(after) - set(before) == ({out / n for n in [*written, MARKER]} if valid
                                             else set())


@pytest.mark.parametrize("depth", [10, 63, 65, 900, 5000])
def test_nesting_bound(tmp_path, depth):
    (tmp_path / "x.json").write_text("[" * depth + "]" * depth)
    if depth <= 64:
        assert read_json(tmp_path / "x.json") is not None
    else:
        with pytest.raises(InputError, match="nested more than"):
            read_json(tmp_path / "x.json")
