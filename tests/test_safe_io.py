"""Hostile input and careless outputs: the guarded reader, the safe writer, run folders, the
cache's locks and sweep, and no network."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.io import (
    MARKER,
    atomic_dir,
    expect,
    output_folder,
    read_json,
    read_json_array,
    read_jsonl,
    read_text,
)
from tests.helpers import samples_file

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def voted(tmp_path: Path) -> Path:
    assert main(["vote", str(samples_file(tmp_path)), "--out", str(tmp_path / "voted")]) == 0
    return tmp_path / "voted"


# ---------------------------------------------------------------------------- the reader

BAD_BYTES = {
    "utf-16": '{"a": "b"}\n'.encode("utf-16"),
    "utf-16 without BOM": '{"a": "b"}\n'.encode("utf-16-le"),
    "latin-1": '{"text": "café"}\n'.encode("latin-1"),
    "binary": b"\xff\xfe\x00\x01\x02\x03\x80\x81" * 64,
    "deep": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "deep under the recursion limit": b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}\n",
    "duplicate key": b'{"a": 1, "a": 2}\n',
    "NaN": b'{"a": NaN}\n',
    "lone surrogate": b'{"a": "\\udc80"}\n',
    "not an object": b"[1, 2]\n",
    "truncated": b'{"a": \n',
}
MESSAGES = {
    "utf-16": "not UTF-8 text: it looks like UTF-16", "utf-16 without BOM": "not UTF-8 text",
    "latin-1": "not UTF-8 text", "binary": "not UTF-8 text", "deep": "nested more than",
    "deep under the recursion limit": "nested more than", "duplicate key": "duplicate key 'a'",
    "NaN": "NaN is not a JSON number", "lone surrogate": "without its pair",
    "not an object": "expected a JSON object", "truncated": "malformed JSON",
}


@pytest.mark.parametrize("case", BAD_BYTES)
@pytest.mark.parametrize("command", ["metrics", "vote", "export"])
def test_bad_bytes_are_one_line(tmp_path, capsys, case, command):
    path = tmp_path / ("pairs.jsonl" if command == "export" else "samples.jsonl")
    path.write_bytes(BAD_BYTES[case])
    argv = {"metrics": ["metrics", str(path)],
            "vote": ["vote", str(path), "--out", str(tmp_path / "out")],
            "export": ["export", str(path), "--format", "trl", "--out", str(tmp_path / "out")]}
    assert main(argv[command]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and MESSAGES[case] in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["utf-16", "latin-1", "binary", "deep", "duplicate key"])
def test_bad_bytes_in_a_calm_file(tmp_path, capsys, case):
    path = tmp_path / "x_csqa_en_train_sampled.json"
    path.write_bytes(BAD_BYTES[case])
    assert main(["metrics", str(path)]) == 2
    assert MESSAGES[case] in one_line_error(capsys)


def test_errors_name_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 1, "b": 2}\n')
    with pytest.raises(InputError, match=r"x\.jsonl:3: duplicate key 'b'"):
        list(read_jsonl(path))
    path.write_bytes(b'{"a": 1}\n{"a": "\xe9"}\n')
    with pytest.raises(InputError, match=r"x\.jsonl:2: not UTF-8 text"):
        list(read_jsonl(path))
    path = tmp_path / "x.json"
    path.write_text('[\n  {"a": 1},\n  {"a": 1, "a": 2}\n]\n')
    with pytest.raises(InputError, match=r"x\.json:3: duplicate key"):
        read_json_array(path)
    path.write_text('[\n  {"a": 1}\n  {"a": 2}\n]\n')
    with pytest.raises(InputError, match=r"x\.json:3: malformed JSON"):
        read_json_array(path)
    # cut short: the fault is named on the last line with content, not the empty one after it
    path.write_text('{\n')
    with pytest.raises(InputError, match=r"x\.json:1: malformed JSON: .* at column 2"):
        read_json_array(path)
    path.write_text('[\n  {"a": 1},\n\n\n')
    with pytest.raises(InputError, match=r"x\.json:2: malformed JSON"):
        read_json_array(path)


def test_a_utf8_bom_and_paired_surrogates_are_fine(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": "\\ud83d\\ude00"}\n')
    assert list(read_jsonl(path)) == [(1, {"a": "\U0001f600"})]
    (tmp_path / "y.json").write_bytes(b'\xef\xbb\xbf["x"]')
    assert read_json(tmp_path / "y.json") == ["x"]


def test_folders_and_size_limits(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="is a folder, expected a file"):
        list(read_jsonl(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        read_text(tmp_path / "absent.txt")
    (tmp_path / "big.json").write_text('["' + "x" * 100 + '"]')
    monkeypatch.setattr("calm_rag.io.read.MAX_DOCUMENT_BYTES", 50)
    with pytest.raises(InputError, match="too large"):
        read_json(tmp_path / "big.json")
    monkeypatch.setattr("calm_rag.io.read.MAX_LINE_BYTES", 50)
    (tmp_path / "long.jsonl").write_text('{"a": "' + "x" * 100 + '"}\n')
    with pytest.raises(InputError, match=r"long\.jsonl:1: line longer"):
        list(read_jsonl(tmp_path / "long.jsonl"))


def test_expect_checks_json_types():
    obj = {"s": "x", "n": 3, "b": True, "f": 1.5, "z": None}
    assert expect(obj, "n", int) == 3 and expect(obj, "n", float) == 3
    assert expect(obj, "z", (str, type(None))) is None
    assert expect(obj, "missing", str, default="d") == "d"
    with pytest.raises(InputError, match="field 'b': expected an integer, got a boolean"):
        expect(obj, "b", int)
    with pytest.raises(InputError, match="field 's': expected a number, got a string"):
        expect(obj, "s", float)
    with pytest.raises(InputError, match="field 'z': missing"):
        expect(obj, "z", str)


def _sample_rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in samples_file(tmp_path).read_text().splitlines()]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("text", 5, "field 'text': expected a string, got a number"),
    ("index", "0", "field 'index': expected an integer, got a string"),
    ("index", True, "field 'index': expected an integer, got a boolean"),
    ("instruction", ["x"], "field 'instruction': expected a string, got a list"),
    ("question.stem", {"x": 1}, "field 'question.stem': expected a string, got an object"),
    ("question.options.A", 1, "field 'question.options.A': expected a string, got a number"),
    ("question.answer", 3, "field 'question.answer': expected a string or null"),
])
def test_wrong_json_types_in_samples(tmp_path, capsys, field, value, message):
    rows = _sample_rows(tmp_path)
    target = rows[1]
    *parents, last = field.split(".")
    for name in parents:
        target = target[name]
    target[last] = value
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["metrics", str(path)]) == 2
    err = one_line_error(capsys)
    assert "samples.jsonl:2:" in err and message in err, err


def test_duplicate_sample_ids_are_refused(tmp_path, capsys):
    rows = _sample_rows(tmp_path)
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [*rows, rows[1]]))
    assert main(["vote", str(path), "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert f"samples.jsonl:{len(rows) + 1}:" in err and "also on line 2" in err, err


def _calm_item(preds: list) -> dict:
    return {"instruction": "Answer.", "input": "Q?\nA. a\nB. b", "output": "A", "pred": preds}


def test_calm_files_with_only_empty_responses(tmp_path, capsys):
    for lang in ("en", "zh"):
        (tmp_path / f"x_csqa_{lang}_train_sampled.json").write_text(
            json.dumps([_calm_item(["", "  "]), _calm_item([])]))
    assert main(["vote", str(tmp_path), "--out", str(tmp_path.parent / "out")]) == 2
    assert "every response is empty" in one_line_error(capsys)
    assert not (tmp_path.parent / "out").exists()


def test_calm_pred_must_hold_strings(tmp_path, capsys):
    path = tmp_path / "x_csqa_en_train_sampled.json"
    path.write_text("[\n" + json.dumps(_calm_item(["A", 7])) + "\n]")
    assert main(["metrics", str(path)]) == 2
    assert "x_csqa_en_train_sampled.json:2: field 'pred[1]': expected a string" in \
        one_line_error(capsys)


def test_a_damaged_index_manifest_says_rebuild(tmp_path):
    from calm_rag.retrieval.manifest import FORMAT, read_manifest

    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": FORMAT, "name": "idx"}))
    with pytest.raises(InputError, match=r"damaged manifest: missing.*rebuild with"):
        read_manifest(folder)


# ---------------------------------------------------------------------------- the writer

def test_export_into_a_llamafactory_data_folder_keeps_the_users_files(tmp_path, capsys):
    data = tmp_path / "LLaMA-Factory" / "data"
    data.mkdir(parents=True)
    (data / "my_other_dataset.json").write_text('[{"instruction": "mine"}]')
    (data / "dataset_info.json").write_text('{"keep": 1}')
    before = sorted(p.name for p in data.iterdir())
    pairs = voted(tmp_path)
    assert main(["export", str(pairs), "--format", "llamafactory", "--out", str(data)]) == 0
    after = sorted(p.name for p in data.iterdir())
    assert set(before) < set(after)
    assert after == [MARKER, "DPO_en.json", "DPO_zh.json", "dataset_info.json",
                     "my_other_dataset.json"]
    assert (data / "my_other_dataset.json").read_text() == '[{"instruction": "mine"}]'
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["keep"] == 1 and set(info) == {"keep", "DPO_en", "DPO_zh"}
    # A second export with --overwrite replaces our own files and entries, keeps the user's.
    info["DPO_en"]["note"] = "stale"
    (data / "dataset_info.json").write_text(json.dumps(info))
    assert main(["export", str(pairs), "--format", "llamafactory", "--out", str(data),
                 "--overwrite"]) == 0
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["keep"] == 1 and "note" not in info["DPO_en"]
    assert not [p for p in data.iterdir() if p.name.startswith(".calm-rag-")
                and p.name != MARKER]


def test_a_malformed_dataset_info_is_not_overwritten(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text('{"keep": 1,')
    pairs = voted(tmp_path)
    capsys.readouterr()
    assert main(["export", str(pairs), "--format", "llamafactory", "--out", str(data)]) == 2
    assert "cannot merge into it" in one_line_error(capsys)
    assert sorted(p.name for p in data.iterdir()) == ["dataset_info.json"]
    assert (data / "dataset_info.json").read_text() == '{"keep": 1,'


def test_vote_into_the_inputs_own_folder_is_refused(tmp_path, capsys):
    samples = samples_file(tmp_path)
    content = samples.read_text()
    assert main(["vote", str(samples), "--out", str(tmp_path)]) == 2
    assert "holds the input" in one_line_error(capsys)
    assert main(["vote", str(samples), "--out", str(samples)]) == 2
    assert "is the input itself" in one_line_error(capsys)
    assert samples.read_text() == content and samples.is_file()


def test_export_out_equal_to_the_input_is_refused(tmp_path, capsys):
    pairs = voted(tmp_path) / "pairs.jsonl"
    content = pairs.read_text()
    capsys.readouterr()
    assert main(["export", str(pairs), "--format", "trl", "--out", str(pairs)]) == 2
    assert "is the input itself" in one_line_error(capsys)
    assert pairs.read_text() == content


def test_a_user_file_with_our_name_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pairs.jsonl").write_text("the user's own\n")
    assert main(["vote", str(samples_file(tmp_path)), "--out", str(out)]) == 2
    assert "pairs.jsonl is already there and was not written by calm-rag" in \
        one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["pairs.jsonl"]
    assert (out / "pairs.jsonl").read_text() == "the user's own\n"


def test_out_that_is_a_file_or_unwritable(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert main(["vote", str(samples_file(tmp_path)), "--out", str(tmp_path / "file")]) == 2
    assert "is a file; expected a folder" in one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "x"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro"))

    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    assert main(["vote", str(tmp_path / "samples.jsonl"), "--out", str(tmp_path / "ro")]) == 2
    assert "cannot write into the folder: Read-only file system" in one_line_error(capsys)


def test_a_lang_that_is_a_path_writes_nothing_outside(tmp_path, capsys):
    pairs = voted(tmp_path) / "pairs.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    rows[0]["lang"] = "../../x"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    capsys.readouterr()
    out = tmp_path / "a" / "b" / "lf"
    assert main(["export", str(bad), "--format", "llamafactory", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "bad.jsonl:1: field 'lang'" in err, err
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob("**/DPO_x.json"))


def test_chosen_equal_to_rejected_is_skipped_and_counted(tmp_path, capsys):
    pairs = voted(tmp_path) / "pairs.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    rows[0]["chosen"] = rows[0]["rejected"]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    capsys.readouterr()
    assert main(["export", str(pairs), "--format", "trl", "--out", str(tmp_path / "t")]) == 0
    assert "skipped 1 pair(s)" in capsys.readouterr().out
    assert len((tmp_path / "t" / "dpo.jsonl").read_text().splitlines()) == len(rows) - 1


def test_a_failed_rename_restores_the_previous_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with output_folder(out) as folder:
        folder.path("a.txt").write_text("old a")
        folder.path("b.txt").write_text("old b")
    real_replace, calls = os.replace, []

    def failing(src, dst):  # the first rename onto b.txt fails (a full disk, say)
        calls.append(dst)
        if Path(dst) == out / "b.txt" and calls.count(dst) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr("calm_rag.io.outputs.os.replace", failing)
    with pytest.raises(OSError), output_folder(out) as folder:
        folder.path("a.txt").write_text("new a")
        folder.path("b.txt").write_text("new b")
        folder.path("c.txt").write_text("new c")
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != MARKER} == {
        "a.txt": "old a", "b.txt": "old b"}
    assert not [p for p in out.iterdir() if p.name.startswith(".calm-rag-") and p.name != MARKER]


def test_names_stay_inside_the_folder(tmp_path):
    with pytest.raises(InputError, match="not a plain file name"), \
            output_folder(tmp_path / "out") as folder:
        folder.path("../escape.txt")
    assert not (tmp_path / "escape.txt").exists()


def test_atomic_dir_puts_the_previous_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "ours"
    target.mkdir()
    (target / "f").write_text("previous")
    real_replace, calls = os.replace, []

    def failing(src, dst):  # the swap fails once; putting the old folder back works
        calls.append(dst)
        if Path(dst) == target and calls.count(dst) == 1:
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr("calm_rag.io.write.os.replace", failing)
    with pytest.raises(OSError), atomic_dir(target) as staging:
        (staging / "f").write_text("new")
    assert (target / "f").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours"]


def test_cli_prints_filesystem_errors_on_one_line(tmp_path, capsys, monkeypatch):
    import calm_rag.commands.metrics as metrics

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/file")

    monkeypatch.setattr(metrics, "run", denied)
    assert main(["metrics", "x"]) == 2
    assert one_line_error(capsys) == "calm-rag metrics: error: /some/file: Permission denied"

    def broken(args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(metrics, "run", broken)
    with pytest.raises(OSError):  # not the user's to fix: the traceback stays
        main(["metrics", "x"])


# ---------------------------------------------------------------------------- runs and cache

def test_run_folders_finishing_in_the_same_second(tmp_path, monkeypatch):
    from calm_rag.pipeline.run_folder import new_run_folder

    monkeypatch.setattr("time.strftime", lambda fmt, *a: "20260101-000000")
    folders = []
    for text in ("first", "second", "third"):
        with new_run_folder(tmp_path / "exp") as (folder, published):
            (folder / "report.md").write_text(text)
        folders.append(published[0])
    assert [f.name for f in folders] == ["20260101-000000", "20260101-000000-2",
                                         "20260101-000000-3"]
    assert [(f / "report.md").read_text() for f in folders] == ["first", "second", "third"]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [f.name for f in folders]
    killed = tmp_path / "exp" / ".run.abc.new"  # a run killed two days ago
    killed.mkdir()
    _age(killed, 2 * 24 * 3600)
    with new_run_folder(tmp_path / "exp"):
        pass
    assert not killed.exists() and len(list((tmp_path / "exp").iterdir())) == 4


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "a\\b"])
def test_run_names_that_are_paths_are_refused(name):
    from calm_rag.pipeline.run_folder import check_run_name

    with pytest.raises(InputError, match="field 'name'"):
        check_run_name(name)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (then, then))


def test_stale_staging_folders_are_swept(tmp_path):
    from calm_rag.pipeline.cache import StageCache

    stage = tmp_path / "cache" / "sample"
    old = [stage / "abc.partial", stage / ".abc.x1.new", stage / ".samples.jsonl.x2.tmp"]
    fresh = [stage / "def.partial", stage / ".def.x3.new"]
    keep = [stage / "abc", stage / "ghi.partial"]
    for folder in [*old, *fresh, *keep]:
        folder.mkdir(parents=True)
        (folder / "shard-00000.jsonl").write_text("{}\n")
    for folder in [*old, *keep]:
        _age(folder, 2 * 24 * 3600)
    import fcntl

    with (stage / ".ghi.lock").open("a") as held:  # a live run still works on ghi
        fcntl.flock(held, fcntl.LOCK_EX)
        StageCache(tmp_path / "cache")
    assert sorted(p.name for p in stage.iterdir() if not p.name.endswith(".lock")) == sorted(
        p.name for p in [*fresh, *keep])


def test_an_empty_stage_is_never_cached_as_done(tmp_path):
    from calm_rag.pipeline.cache import StageCache

    cache = StageCache(tmp_path)
    with pytest.raises(InputError, match="produced no records"), \
            cache.writing("sample", "k") as folder:
        (folder / "samples.jsonl").write_text("")
    assert not cache.has("sample", "k") and not cache.folder("sample", "k").exists()


def test_a_second_run_waits_for_the_first_and_reads_its_result(tmp_path):
    from calm_rag.pipeline.cache import StageCache

    first = StageCache(tmp_path)
    work = first.work_folder("sample", "k")  # the first run claims the key
    (work / "shard-00000.jsonl").write_text("{}\n")
    second = subprocess.Popen(  # another run asking for the same key
        [sys.executable, "-c", "import sys; from calm_rag.pipeline.cache import StageCache; "
         f"print(StageCache({str(tmp_path)!r}).has('sample', 'k'))"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(3)
    assert second.poll() is None  # waiting, not failing on a shard that is about to vanish
    with first.writing("sample", "k") as folder:
        (folder / "samples.jsonl").write_text("{}\n")
    first.drop_work("sample", "k")
    out, err = second.communicate(timeout=60)
    assert out.strip() == "True", err
    # Writing a key another run finished keeps that run's output.
    with StageCache(tmp_path).writing("sample", "k") as folder:
        (folder / "samples.jsonl").write_text('{"other": 1}\n')
    assert (first.folder("sample", "k") / "samples.jsonl").read_text() == "{}\n"


# ---------------------------------------------------------------------------- no network

def test_no_connection_and_telemetry_off(tmp_path):
    samples = samples_file(tmp_path)
    script = textwrap.dedent(f"""
        import os, socket, sys
        for name in ("HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
            os.environ.pop(name, None)
        os.environ["VLLM_NO_USAGE_STATS"] = "0"  # a user's own setting wins

        def refuse(self, *args):
            raise SystemExit(f"network connection attempted: {{args}}")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        import calm_rag
        assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
        assert os.environ["DO_NOT_TRACK"] == "1"
        assert os.environ["VLLM_NO_USAGE_STATS"] == "0"
        from calm_rag.cli import main
        assert main(["vote", {str(samples)!r}, "--out", {str(tmp_path / 'v')!r}]) == 0
        assert main(["metrics", {str(samples)!r}]) == 0
        assert main(["export", {str(tmp_path / 'v')!r}, "--format", "trl",
                     "--out", {str(tmp_path / 't')!r}]) == 0
        print("no connection")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no connection" in result.stdout


def test_index_list_names_a_damaged_manifest(tmp_path, capsys):
    from calm_rag.retrieval.manifest import FORMAT

    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": FORMAT, "name": "idx"}))
    assert main(["index", "list", "--index-dir", str(tmp_path)]) == 0
    assert "broken: damaged manifest: missing" in capsys.readouterr().out
    assert main(["index", "info", str(folder)]) == 2
    assert "rebuild with" in one_line_error(capsys)


def test_a_claim_lets_the_holder_check_and_write(tmp_path):
    from calm_rag.pipeline.cache import StageCache

    cache = StageCache(tmp_path)
    with cache.claim("align", "k"):
        assert not cache.has("align", "k")  # no wait on our own lock
        with cache.writing("align", "k") as folder:
            (folder / "log.json").write_text("{}")
        assert cache.has("align", "k")
    assert cache.has("align", "k")


def test_unreadable_files_are_one_line(tmp_path, capsys, monkeypatch):
    samples = samples_file(tmp_path)
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == samples:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    assert main(["metrics", str(samples)]) == 2
    assert one_line_error(capsys).endswith("samples.jsonl: cannot read: Permission denied")
    monkeypatch.setattr(Path, "read_bytes", lambda self: denied(self))
    with pytest.raises(InputError, match="cannot read: Permission denied"):
        read_text(samples)
