"""Cache control: ``--force`` recomputes a stage and replaces its entry; ``calm-rag cache list``
and ``prune`` keep what runs reference; a run says what it reused and links its training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.experiment import Experiment
from calm_rag.pipeline.cache import StageCache
from calm_rag.pipeline.cache_usage import DAY, CacheEntry, cache_entries, prune_plan
from calm_rag.pipeline.cached import Stage, run_cached
from calm_rag.pipeline.stages import RunContext
from tests.helpers import experiment, latest_run, run_cli, write_experiment

# ---------------------------------------------------------------------------- --force


def _text_stage(name: str, in_place: bool = False) -> Stage[str]:
    """A stage whose result is one text file (a real stage name: the cache knows it)."""
    return Stage(name, lambda folder, text: (folder / "out.txt").write_text(text),
                 lambda folder: (folder / "out.txt").read_text(), in_place=in_place)


def _ctx(root: Path, force: frozenset[str] = frozenset()) -> RunContext:
    return RunContext(Experiment(name="t"), StageCache(root, force=force), progress=False)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_forced_stage_is_recomputed_once_and_replaces_its_entry(tmp_path, in_place):
    name = "align" if in_place else "sample"
    stage, key = _text_stage(name, in_place), "k1"
    assert run_cached(_ctx(tmp_path), stage, "job", key, lambda _: "first") == "first"
    ctx = _ctx(tmp_path)
    assert run_cached(ctx, stage, "job", key, lambda _: "never") == "first"
    assert ctx.stages[-1]["cached"] is True
    forced = _ctx(tmp_path, frozenset({name}))
    assert run_cached(forced, stage, "job", key, lambda _: "second") == "second"
    assert forced.stages[-1] == forced.stages[-1] | {"cached": False, "forced": True}
    # Within the forcing run the key is computed once; later reads get the new entry.
    assert run_cached(forced, stage, "job", key, lambda _: "third") == "second"
    assert run_cached(_ctx(tmp_path), stage, "job", key, lambda _: "never") == "second"
    assert (tmp_path / name / key / "DONE").is_file()
    assert sorted(p.name for p in (tmp_path / name).iterdir()
                  if not p.name.endswith(".lock")) == [key]


def test_a_resumed_stage_is_reported_as_reused(tmp_path):
    """A killed run's finished piece is counted, in the stage's record and in ``reused``."""
    from calm_rag.pipeline.run_folder import reuse_line, reused

    work = tmp_path / "sample" / "k1.partial"
    work.mkdir(parents=True)
    (work / "shard-00000.jsonl").write_text("{}\n")
    ctx = _ctx(tmp_path)
    assert run_cached(ctx, _text_stage("sample"), "r1/train", "k1", lambda _: "x") == "x"
    assert run_cached(ctx, _text_stage("sample"), "r1/train", "k1", lambda _: "never") == "x"
    assert [(s["cached"], s.get("resumed")) for s in ctx.stages] == [(False, 1), (True, None)]
    assert reused(ctx.stages) == [
        "sample r1/train", "sample r1/train (resumed from 1 file(s) of a killed run)"]
    assert reuse_line(ctx.stages).startswith(
        "reused from the cache: 1 of 2 stage(s); resumed from a killed run: 1; forced: 0")


def test_force_names_stages_that_exist(tmp_path):
    with pytest.raises(InputError, match="no stage named smaple") as found:
        StageCache(tmp_path, force=frozenset({"smaple"}))
    assert found.value.field == "--force" and "sample" in found.value.hint


# ---------------------------------------------------------------------------- list, prune


def _entry(key: str, size: int, days: float, runs: tuple[str, ...] = (),
           done: bool = True) -> CacheEntry:
    return CacheEntry("sample", key, size, 100 * DAY - days * DAY, done, runs)


def test_prune_plan_keeps_what_runs_reference():
    entries = [_entry("old", 500, 30), _entry("kept", 900, 40, runs=("demo/1",)),
               _entry("mid", 300, 10), _entry("new", 200, 1),
               _entry("work.partial", 700, 50, done=False), _entry("stamp", 0, 90)]
    keys = [e.key for e in prune_plan(entries, now=100 * DAY)]
    assert keys == ["old", "mid", "new"]
    aged = prune_plan(entries, older_than_days=7, now=100 * DAY)
    assert [e.key for e in aged] == ["old", "mid"]
    # 2600 bytes in all: down to 2000 takes the oldest unreferenced (500, then 300).
    sized = prune_plan(entries, max_bytes=2000, now=100 * DAY)
    assert [e.key for e in sized] == ["old", "mid"]
    assert [e.key for e in prune_plan(entries, older_than_days=20, max_bytes=2000,
                                      now=100 * DAY)] == ["old", "mid"]
    assert prune_plan(entries, older_than_days=60, now=100 * DAY) == []


def _fake_cache(runs: Path) -> None:
    """Three sample entries: k1 (1000 bytes, no run), k2 (2000 bytes, run demo/20260101),
    k3.partial (a killed run's 500 bytes)."""
    for key, size, done in (("k1", 1000, True), ("k2", 2000, True), ("k3.partial", 500, False)):
        folder = runs / ".cache" / "sample" / key
        folder.mkdir(parents=True)
        (folder / "samples.jsonl").write_bytes(b"x" * size)
        if done:
            (folder / "DONE").write_text("")
    run = runs / "demo" / "20260101"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(
        {"stages": [{"stage": "sample", "label": "r1", "key": "k2", "cached": False}]}))
    old = (runs / ".cache" / "sample" / "k1" / "DONE")
    os.utime(old, (old.stat().st_atime - 10 * DAY, old.stat().st_mtime - 10 * DAY))


def test_cache_list_and_prune(tmp_path, capsys):
    runs = tmp_path / "runs"
    _fake_cache(runs)
    entries = {e.key: e for e in cache_entries(runs)}
    assert {k: (e.size, e.done, e.runs) for k, e in entries.items()} == {
        "k1": (1000, True, ()), "k2": (2000, True, ("demo/20260101",)),
        "k3.partial": (500, False, ())}
    assert main(["cache", "list", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sample: 3 entries, 3.4 kB"  # 3500 bytes
    assert out[2].startswith("  k2 ") and out[2].endswith("demo/20260101")
    assert out[3].endswith("no run (unfinished: a killed run's work)")
    assert main(["cache", "prune", "--runs-dir", str(runs), "--older-than", "5",
                 "--dry-run"]) == 0
    assert "would remove: 1 entries" in capsys.readouterr().out
    assert (runs / ".cache" / "sample" / "k1" / "DONE").is_file()
    assert main(["cache", "prune", "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "before: 3.4 kB in 3 entries", "removed: 1 entries no run references, 1.0 kB",
        "after: 2.4 kB in 2 entries"]
    assert sorted(p.name for p in (runs / ".cache" / "sample").iterdir()
                  if not p.name.startswith(".")) == ["k2", "k3.partial"]


def test_prune_needs_a_cache(tmp_path, capsys):
    assert main(["cache", "prune", "--runs-dir", str(tmp_path)]) == 2
    assert "holds no stage cache" in capsys.readouterr().err


# ---------------------------------------------------------------------------- a real run


@pytest.mark.slow
def test_forced_training_links_and_reuse(sharp_model, tmp_path, capsys):
    path = write_experiment(tmp_path, experiment(sharp_model, tmp_path / "runs"))
    assert run_cli(path) == 0
    first = latest_run(tmp_path / "runs")
    links = json.loads((first / "links.json").read_text())["rounds"]
    assert [link["round"] for link in links] == [1]
    assert (first / links[0]["adapter"] / "adapter_config.json").is_file()
    assert links[0]["training"].startswith("../../.cache/align/")
    written = json.loads((first / "manifest.json").read_text())
    assert written["reused"] == []
    # The aligned model as links.json has it (relative), its machine path under "paths".
    final = written["models"]["final"]
    assert final.startswith("../../.cache/align/") and (first / final).is_dir()
    assert written["paths"]["final_model"] == str((first / final).resolve())
    capsys.readouterr()
    assert run_cli(path, "--force", "align") == 0
    said = "".join(capsys.readouterr())
    second = latest_run(tmp_path / "runs")
    manifest = json.loads((second / "manifest.json").read_text())
    trained = [s for s in manifest["stages"] if s["stage"] == "align"]
    assert [(s["cached"], s.get("forced")) for s in trained] == [(False, True)]
    others = [s for s in manifest["stages"] if s["stage"] != "align"]
    # The evaluation after alignment samples the retrained (identical) model: cached too.
    assert others and all(s["cached"] for s in others)
    assert manifest["reused"] == [f"{s['stage']} {s['label']}" for s in others]
    assert (f"reused from the cache: {len(others)} of {len(manifest['stages'])} stage(s); "
            "resumed from a killed run: 0; forced: 1") in said


def test_force_help_names_every_stage_that_can_be_forced():
    from calm_rag.cli import build_parser
    from calm_rag.pipeline.cache import FORCEABLE

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    (force,) = [a for a in run._actions if "--force" in a.option_strings]
    named = force.help.split("(")[1].split(";")[0].split(", ")
    assert named == list(FORCEABLE)


def test_a_failed_compute_leaves_no_empty_work_folder_but_keeps_resumable_work(tmp_path):
    stage = _text_stage("sample")

    def fails(work: Path) -> str:
        raise RuntimeError("the model could not be loaded")

    def fails_after_a_piece(work: Path) -> str:
        (work / "shard-0.jsonl").write_text("{}\n")
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        run_cached(_ctx(tmp_path), stage, "job", "k1", fails)
    assert not (tmp_path / "sample" / "k1.partial").exists()
    with pytest.raises(RuntimeError):
        run_cached(_ctx(tmp_path), stage, "job", "k2", fails_after_a_piece)
    kept = tmp_path / "sample" / "k2.partial" / "shard-0.jsonl"
    assert kept.read_text() == "{}\n"
