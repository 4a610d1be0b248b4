from __future__ import annotations

import json
import subprocess
import sys

import pytest

from calm_rag.cli import build_parser, main
from tests.helpers import samples_file

COMMANDS = ["vote", "export", "metrics"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: calm-rag" in capsys.readouterr().out


def test_vote_export_metrics(tmp_path, capsys):
    samples = samples_file(tmp_path)
    assert main(["vote", str(samples), "--out", str(tmp_path / "voted")]) == 0
    summary = json.loads((tmp_path / "voted" / "summary.json").read_text())
    assert summary["pairs_per_language"] == {"en": 1, "zh": 1}
    assert summary["votes"] == {"majority": 2}
    votes = [json.loads(x) for x in (tmp_path / "voted" / "votes.jsonl").read_text().splitlines()]
    assert [v["answer"] for v in votes] == ["C", "B"]

    assert main(["export", str(tmp_path / "voted"), "--format", "llamafactory",
                 "--out", str(tmp_path / "lf")]) == 0
    assert sorted(p.name for p in (tmp_path / "lf").iterdir()) == [
        ".calm-rag-outputs.json", "DPO_en.json", "DPO_zh.json", "dataset_info.json"]
    assert main(["export", str(tmp_path / "voted" / "pairs.jsonl"), "--format", "trl",
                 "--form", "standard", "--out", str(tmp_path / "trl")]) == 0
    assert len((tmp_path / "trl" / "dpo.jsonl").read_text().splitlines()) == 2

    capsys.readouterr()
    assert main(["metrics", str(samples), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["zero-shot"]["accuracy"]["en"]["value"] == pytest.approx((0.5 + 1) / 2)
    assert main(["metrics", str(samples)]) == 0
    assert "Cross-lingual consistency" in capsys.readouterr().out


def test_vote_options_override_the_preset(tmp_path):
    samples = samples_file(tmp_path)
    args = build_parser().parse_args(["vote", str(samples), "--out", "x", "--policy", "calm",
                                      "--tie", "drop", "--max-pairs-per-question", "2"])
    from calm_rag.commands.vote import config_from_args

    config = config_from_args(args)
    assert (config.tie, config.chosen_fallback, config.max_pairs_per_question) == (
        "drop", "pivot", 2)


BAD_LINES = {
    "malformed": ("{not json", r"samples\.jsonl:2: malformed JSON"),
    "missing field": ('{"question": {"id": "q", "lang": "en", "stem": "s", "options": {"A": "a"}}}',
                      r"samples\.jsonl:2: field 'text': missing"),
    "unknown language": (None, r"samples\.jsonl:2: field 'lang': unknown language code 'xx'"),
    "letter outside options": (None, r"samples\.jsonl:2: field 'answer'.*outside the options"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case, capsys):
    good = samples_file(tmp_path).read_text().splitlines()
    bad, message = BAD_LINES[case]
    if bad is None:
        row = json.loads(good[1])
        if case == "unknown language":
            row["question"]["lang"] = "xx"
        else:
            row["answer"] = "Q"
        bad = json.dumps(row)
    (tmp_path / "samples.jsonl").write_text("\n".join([good[0], bad, *good[2:]]) + "\n")
    out = tmp_path / "voted"
    assert main(["vote", str(tmp_path / "samples.jsonl"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not out.exists() and not list(tmp_path.glob(".voted*"))


def test_empty_and_missing_files(tmp_path, capsys):
    (tmp_path / "samples.jsonl").write_text("")
    assert main(["metrics", str(tmp_path / "samples.jsonl")]) == 2
    assert "the file is empty" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_failed_vote_keeps_the_previous_output(tmp_path):
    samples = samples_file(tmp_path)
    out = tmp_path / "voted"
    assert main(["vote", str(samples), "--out", str(out)]) == 0
    before = (out / "pairs.jsonl").read_text()
    samples.write_text("{broken\n")
    assert main(["vote", str(samples), "--out", str(out)]) == 2
    assert (out / "pairs.jsonl").read_text() == before


def test_console_script_exit_code():
    result = subprocess.run([sys.executable, "-m", "calm_rag.cli", "metrics", "/nonexistent"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_a_reader_that_stops_reading_ends_the_command_without_a_traceback():
    """``calm-rag run --describe | head -1``: the reader closes the pipe before the command
    writes (here at once, before the command has even started)."""
    command = subprocess.Popen([sys.executable, "-m", "calm_rag.cli", "run", "--describe"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    command.stdout.close()
    said = command.stderr.read().decode()
    assert command.wait() == 141 and said == ""  # 128 + SIGPIPE, as `yes | head` ends
