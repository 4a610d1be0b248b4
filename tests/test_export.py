"""``calm-rag export`` never replaces silently: prefixes keep experiments apart, an existing
file or dataset_info.json entry of the same name is refused unless ``--overwrite``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calm_rag.cli import main
from tests.helpers import samples_file


@pytest.fixture
def voted(tmp_path: Path) -> Path:
    """pairs.jsonl of the vote on the shared samples: one pair in en, one in zh."""
    assert main(["vote", str(samples_file(tmp_path)), "--out", str(tmp_path / "voted")]) == 0
    return tmp_path / "voted" / "pairs.jsonl"


def _export(pairs: Path, out: Path, *args: str) -> int:
    return main(["export", str(pairs), "--format", "llamafactory", "--out", str(out), *args])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_second_export_of_the_same_name_is_refused(voted, tmp_path, capsys):
    data = tmp_path / "data"
    assert _export(voted, data) == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    capsys.readouterr()
    assert _export(voted, data) == 2
    err = _error(capsys)
    assert "DPO_en.json is already there" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert _export(voted, data, "--overwrite") == 0


def test_a_prefix_keeps_two_experiments_apart(voted, tmp_path, capsys):
    data = tmp_path / "data"
    assert _export(voted, data) == 0
    first = (data / "DPO_en.json").read_bytes()
    capsys.readouterr()
    assert _export(voted, data, "--prefix", "exp2", "--calm-names") == 0
    assert "exp2_cn.json: 1 rows" in capsys.readouterr().out
    assert (data / "DPO_en.json").read_bytes() == first
    info = json.loads((data / "dataset_info.json").read_text())
    assert sorted(info) == ["DPO_en", "DPO_zh", "exp2_cn", "exp2_en"]
    assert info["exp2_cn"]["file_name"] == "exp2_cn.json" and info["exp2_cn"]["ranking"]
    rows = json.loads((data / "exp2_cn.json").read_text())
    assert len(rows) == 1 and set(rows[0]) == {"instruction", "input", "chosen", "rejected"}


def test_an_entry_of_the_same_name_is_refused(voted, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text('{"DPO_zh": {"file_name": "theirs.json"}}')
    assert _export(voted, data) == 2
    assert "dataset_info.json already has an entry DPO_zh" in _error(capsys)
    assert sorted(p.name for p in data.iterdir()) == ["dataset_info.json"]


def test_trl_rows_are_not_replaced_either(voted, tmp_path, capsys):
    out = tmp_path / "trl"
    args = ["export", str(voted), "--format", "trl", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "dpo.jsonl is already there" in _error(capsys)
    assert main([*args, "--overwrite"]) == 0


def test_a_prefix_with_a_folder_part_is_refused(voted, tmp_path, capsys):
    assert _export(voted, tmp_path / "data", "--prefix", "../up") == 2
    assert "--prefix" in _error(capsys)
    assert not (tmp_path / "up_en.json").exists()
