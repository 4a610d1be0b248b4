"""One rule for paths: inputs from the experiment file, outputs from the current folder.

The resolved experiment (``--print-config``, a run's ``config.yaml``) reads the same from any
folder; index specs are found from the experiment; the report names no absolute path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.evaluation.report import portable_text
from calm_rag.experiment import load_experiment
from calm_rag.retrieval.catalog import find_spec, locate_index
from tests.helpers import CALM_REFERENCE, experiment, latest_run, run_cli, write_experiment

REPO = Path(__file__).resolve().parents[1]


def _clone(root: Path) -> Path:
    """A clone's layout: pipelines/e.yaml beside indexes/tiny.yaml; returns the experiment."""
    (root / "indexes").mkdir(parents=True)
    (root / "indexes" / "tiny.yaml").write_text("name: tiny\n", encoding="utf-8")
    exp = root / "pipelines" / "e.yaml"
    exp.parent.mkdir()
    exp.write_text(yaml.safe_dump({
        "name": "e", "data": {"source": "medqa", "path": "../data/{lang}/test.jsonl",
                              "languages": ["en", "zh"]},
        "generator": {"backend": "hf"}, "retrieval": {"index": "tiny"}}), encoding="utf-8")
    return exp


def test_spec_found_from_the_experiment_not_the_current_folder(tmp_path, monkeypatch):
    exp = _clone(tmp_path / "clone")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "indexes").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert find_spec("tiny", "indexes", exp.parent) == tmp_path / "clone" / "indexes" / "tiny.yaml"
    # The current folder's indexes/ is searched last, for an experiment far from any spec.
    (elsewhere / "indexes" / "other.yml").write_text("name: other\n", encoding="utf-8")
    assert find_spec("other", "indexes", exp.parent) == elsewhere / "indexes" / "other.yml"
    assert find_spec("none", "indexes", exp.parent) is None
    absolute = tmp_path / "clone" / "indexes"
    assert find_spec("tiny", absolute, tmp_path) == absolute / "tiny.yaml"


def test_missing_index_hint_names_a_spec_that_exists(tmp_path, monkeypatch):
    exp = _clone(tmp_path / "clone")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as found:
        locate_index("tiny", "indexes", base_dir=exp.parent)
    spec = tmp_path / "clone" / "indexes" / "tiny.yaml"
    assert found.value.hint == f"build it with: calm-rag index build {spec} --out-dir indexes"
    with pytest.raises(InputError) as missing:
        locate_index("gone", "indexes", base_dir=exp.parent)
    assert missing.value.message == ("no built index named 'gone' in indexes, nor a spec to "
                                     "build it from")
    assert missing.value.hint == ("write indexes/gone.yaml, here or beside the experiment, and "
                                  "build it with calm-rag index build, or name a built index")


def test_print_config_is_the_resolved_experiment(tmp_path, monkeypatch, capsys):
    exp = _clone(tmp_path / "clone")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["run", str(exp), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["path"] == f"{tmp_path}/clone/data/{{lang}}/test.jsonl"
    assert printed["runs_dir"] == str(work / "runs")
    assert printed["retrieval"]["index_dir"] == str(work / "indexes")
    # Printed and read back from another folder, it resolves to itself.
    again = tmp_path / "again"
    again.mkdir()
    (again / "x.yaml").write_text(yaml.safe_dump(printed), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_experiment(again / "x.yaml").resolved() == printed


def test_report_values_name_no_absolute_path(tmp_path):
    run = tmp_path / "runs" / "demo" / "20260101-000000"
    cache = tmp_path / "runs" / ".cache" / "align" / "k1"
    assert portable_text(f"{cache}/merged + adapter {cache}/adapter", run) == (
        "../../.cache/align/k1/merged + adapter ../../.cache/align/k1/adapter")
    assert portable_text(f"{run}/adapter", run) == "adapter"
    assert portable_text(f"medqa {tmp_path}/data/{{lang}}.jsonl: 4 train", run) == (
        "medqa ../../../data/{lang}.jsonl: 4 train")
    assert portable_text("bundled medical: 4 train, 2 heldout", run) == (
        "bundled medical: 4 train, 2 heldout")
    home = Path.home().resolve()
    assert portable_text(f"{home}/models/m", Path("/nowhere/run")) == "~/models/m"


def test_check_from_another_folder_loads_the_same_questions(tmp_path, monkeypatch, capsys):
    """The acceptance: ``--print-config`` of calm-xcsqa, checked from another folder."""
    if not CALM_REFERENCE.is_dir():
        pytest.skip(f"CALM's released data is not beside the project ({CALM_REFERENCE} "
                    "missing); a user's clone has no ../shared")
    monkeypatch.chdir(REPO)
    overrides = ["--set", "data.train=8", "--set", "data.heldout=10"]
    assert main(["run", "pipelines/calm-xcsqa.yaml", *overrides, "--check"]) == 0
    here = capsys.readouterr().out
    assert main(["run", "pipelines/calm-xcsqa.yaml", *overrides, "--print-config"]) == 0
    (tmp_path / "x.yaml").write_text(capsys.readouterr().out, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "x.yaml", "--check"]) == 0
    there = capsys.readouterr().out

    def rows(text: str) -> list[str]:
        return [line for line in text.splitlines() if " rows " in line or "line up" in line]

    assert rows(here) == rows(there) and len(rows(here)) == 14
    assert "899 questions line up in every language" in there


@pytest.mark.slow
def test_saved_config_reruns_from_another_folder_from_the_cache(sharp_model, tmp_path,
                                                                 monkeypatch):
    """A finished run's config.yaml, run from elsewhere: same cache, every stage reused."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_experiment(project, experiment(sharp_model, Path("runs"), align__rounds=0))
    monkeypatch.chdir(project)
    assert run_cli(path) == 0
    first = latest_run(project / "runs")
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["runs_dir"] == str(project / "runs")
    assert str(tmp_path) not in (first / "report.md").read_text()
    written = json.loads((first / "manifest.json").read_text())
    paths = written["paths"]
    assert paths["runs_dir"] == str(project / "runs") and paths["cwd"] == str(project)
    # The model as the experiment names it; the machine's path under "paths".
    assert written["models"]["base"] == str(sharp_model)
    assert paths["base_model"] == str(sharp_model.resolve())
    monkeypatch.chdir(elsewhere)
    assert run_cli(first / "config.yaml") == 0
    second = latest_run(project / "runs")
    assert second != first and not (elsewhere / "runs").exists()
    stages = json.loads((second / "manifest.json").read_text())["stages"]
    assert stages and all(stage["cached"] for stage in stages)
    assert (second / "metrics.json").read_text() == (first / "metrics.json").read_text()
