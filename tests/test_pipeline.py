"""The CALM loop end to end on a tiny model: run, cache, resume after kill -9, config errors.

Everything is real: transformers sampling (``hf``), the log-prob fallback, voting, TRL DPO with
a PEFT LoRA adapter, evaluation and the report. The model is the 2-layer Llama of
tests/sharp_model.py, so a whole run takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from tests.helpers import experiment, latest_run, run_cli, write_experiment

REPO = Path(__file__).resolve().parents[1]



# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def finished(sharp_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    path = write_experiment(root, experiment(sharp_model, root / "runs"))
    assert run_cli(path) == 0
    return root


def test_run_writes_every_artifact(finished):
    run = latest_run(finished / "runs")
    for name in ("config.yaml", "manifest.json", "samples.jsonl", "votes.jsonl", "pairs.jsonl",
                 "metrics.json", "report.md", "loss.png", "adapter/adapter_config.json",
                 "plots/accuracy.png", "eval/train-before.jsonl", "eval/heldout-after.jsonl"):
        assert (run / name).is_file(), name
    samples = (run / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 4 * 2 * 3  # train questions x languages x n
    # Every sample has an answer, each saying how it was obtained.
    rows = [json.loads(line) for line in samples]
    assert all(r["answer"] and r["extraction"] not in ("", "none") for r in rows)
    manifest = json.loads((run / "manifest.json").read_text())
    assert {"seeds", "packages", "git", "stages", "models", "questions"} <= set(manifest)
    assert manifest["packages"]["trl"] and manifest["packages"]["transformers"]
    assert len(manifest["questions"]["train"]) == 4
    grid = json.loads((run / "metrics.json").read_text())
    assert set(grid["cells"]) == {"train/before", "train/after", "heldout/before",
                                  "heldout/after"}
    report = (run / "report.md").read_text()
    assert "## Consistency before → after" in report and "](plots/accuracy.png)" in report
    votes = [json.loads(line) for line in (run / "votes.jsonl").read_text().splitlines()]
    tied = sum(v["status"] in ("tie-broken", "tie-dropped") for v in votes)
    assert f"- **tied**: {tied} (" in report  # two languages tie often: the report says so
    # The aligned model is the base with the trained adapter on top, both named.
    assert "+ adapter " in next(line for line in report.splitlines() if "aligned model" in line)
    assert str(finished) not in report.replace(str(finished / "runs" / ".cache"), "")


def test_resolved_config_reads_back(finished):
    run = latest_run(finished / "runs")
    again = load_experiment(run / "config.yaml")
    assert again.sampling.n == 3 and again.align.method == "dpo"


def test_rerun_recomputes_nothing(finished):
    path = finished / "exp.yaml"
    first = latest_run(finished / "runs")
    assert run_cli(path) == 0
    second = latest_run(finished / "runs")
    assert second != first
    stages = json.loads((second / "manifest.json").read_text())["stages"]
    assert stages and all(stage["cached"] for stage in stages)
    assert (second / "samples.jsonl").read_bytes() == (first / "samples.jsonl").read_bytes()


def test_sft_and_gold_target_baselines(sharp_model, tmp_path):
    data = experiment(sharp_model, tmp_path / "runs", align__method="sft", align__target="gold")
    assert run_cli(write_experiment(tmp_path, data)) == 0
    run = latest_run(tmp_path / "runs")
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    gold = {json.loads(line)["question"]["id"]: json.loads(line)["question"]["answer"]
            for line in (run / "samples.jsonl").read_text().splitlines()}
    assert pairs and all(p["chosen_answer"] == gold[p["question_id"]] for p in pairs)
    log = json.loads((run / "manifest.json").read_text())["stages"]
    assert any(s["stage"] == "align" and not s["cached"] for s in log)


def test_traditional_and_simplified_chinese_vote_as_two_languages(sharp_model, tmp_path):
    """MedQA Taiwan with the release's translations: zh-hant, en and zh, one run."""
    taiwan = tmp_path / "data_clean" / "questions" / "Taiwan"
    stems = {"zh-hant": "哪種維生素缺乏會導致{}？", "en": "Which vitamin deficiency causes {}?",
             "zh": "哪种维生素缺乏会导致{}？"}
    files = {"zh-hant": taiwan / "test.jsonl",
             "en": taiwan / "tw_translated_jsonl" / "en" / "test-2en.jsonl",
             "zh": taiwan / "tw_translated_jsonl" / "zh" / "test-2zh.jsonl"}
    for code, file in files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("".join(json.dumps({
            "question": stems[code].format(i), "answer_idx": "ABCD"[i % 4],
            "options": {"A": "A", "B": "B1", "C": "C", "D": "K"}}, ensure_ascii=False) + "\n"
            for i in range(6)), encoding="utf-8")
    data = experiment(sharp_model, tmp_path / "runs", data={
        "source": "medqa-taiwan-translated", "path": str(tmp_path / "data_clean"),
        "languages": ["zh-tw", "en", "zh"], "train": 4, "heldout": 2})
    assert run_cli(write_experiment(tmp_path, data)) == 0
    run = latest_run(tmp_path / "runs")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["question"]["lang"] for s in samples} == {"zh-hant", "en", "zh"}
    traditional = next(s for s in samples if s["question"]["lang"] == "zh-hant")
    assert "以繁體中文作答" in traditional["instruction"]  # asked in traditional Chinese
    assert "| acc en | acc zh | acc zh-hant |" in (run / "report.md").read_text()


# ---------------------------------------------------------------------------- kill -9, resume


def shards(runs: Path) -> list[Path]:
    return sorted((runs / ".cache" / "sample").glob("*.partial/shard-*.jsonl"))


def test_killed_run_resumes_without_duplicates(sharp_model, tmp_path):
    """kill -9 during sampling, run again: every sample once, the same as an unbroken run."""
    slow = {"sampling__max_tokens": 48, "data__train": 8, "align__epochs": 1,
            "shard_questions": 1, "generator__options": {"batch_size": 1, "threads": 1}}
    broken = write_experiment(tmp_path / "a", experiment(sharp_model, tmp_path / "a/runs", **slow))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "calm_rag.cli", "run", str(broken), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not shards(tmp_path / "a/runs") and proc.poll() is None:
            assert time.monotonic() < deadline, "no shard was written"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = len(shards(tmp_path / "a/runs"))
    assert 1 <= done < 8, f"the kill came after {done} of 8 shards"
    assert run_cli(broken) == 0

    whole = write_experiment(tmp_path / "b", experiment(sharp_model, tmp_path / "b/runs", **slow))
    assert run_cli(whole) == 0
    resumed = (latest_run(tmp_path / "a/runs") / "samples.jsonl").read_text().splitlines()
    unbroken = (latest_run(tmp_path / "b/runs") / "samples.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in resumed]
    assert len(ids) == len(set(ids)) == 8 * 2 * 3
    assert resumed == unbroken
    assert not shards(tmp_path / "a/runs")  # the partial work is gone once complete


# ---------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(("change", "key", "allowed"), [
    ({"align": {"betta": 0.1}}, "align.betta", "beta"),
    ({"sampling": {"n": "three"}}, "sampling.n", "expected int"),
    ({"retrieval": {"policy": "psychic"}}, "retrieval.policy", "fused"),
    ({"generator": {"backend": "telepathy"}}, "generator.backend", "hf"),
    ({"answers": {"fallback": 3}}, "answers.fallback", "logprob"),
])
def test_bad_config_names_the_key(tmp_path, capsys, change, key, allowed):
    data = {"name": "bad", "runs_dir": str(tmp_path / "runs"), **change}
    path = write_experiment(tmp_path, data)
    assert run_cli(path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert key in err and allowed in err and "exp.yaml" in err
    assert not (tmp_path / "runs" / "bad").exists()


def test_missing_model_and_index_are_named(sharp_model, tmp_path, capsys):
    data = experiment(sharp_model, tmp_path / "runs", generator__model=str(tmp_path / "nope"))
    assert run_cli(write_experiment(tmp_path / "m", data)) == 2
    assert "generator.model" in capsys.readouterr().err
    data = experiment(sharp_model, tmp_path / "runs", retrieval={
        "enabled": True, "index": "no-such-index", "index_dir": str(tmp_path / "indexes")})
    assert run_cli(write_experiment(tmp_path / "i", data)) == 2
    err = capsys.readouterr().err
    assert "no-such-index" in err and "calm-rag index build" in err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_set_overrides_and_retrieval_toggle(tmp_path):
    path = write_experiment(tmp_path, {"name": "x", "retrieval": {"enabled": True}})
    loaded = load_experiment(path, ["retrieval.k=3", "retrieval.enabled=false", "sampling.n=2"])
    assert loaded.retrieval.k == 3 and not loaded.retrieval.enabled and loaded.sampling.n == 2
    assert loaded.settings == ("zero-shot",)
    with pytest.raises(InputError, match="KEY=VALUE"):
        load_experiment(path, ["retrieval.k"])


def test_shipped_experiments_load():
    for name in ("demo", "medqa", "xcsqa", "medqa-taiwan"):
        loaded = load_experiment(REPO / "pipelines" / f"{name}.yaml")
        assert loaded.retrieval.enabled and "rag" in loaded.settings


def test_only_rag_jobs_put_passages_in_the_prompt():
    from dataclasses import replace

    from calm_rag.pipeline.keys import JobKey, PassageKey
    from calm_rag.pipeline.stages import SampleJob, passages_for
    from calm_rag.records import Question

    fr = Question(id="q1", lang="fr", stem="s", options={"A": "a", "B": "b"}, answer="A")
    en = replace(fr, lang="en")
    key = JobKey.evaluation("heldout", "before", "rag")
    rag = SampleJob(key, [fr, en], None,
                    {PassageKey("q1", "fr"): ["p fr"], PassageKey("q1", "en"): ["p en"]})
    given = passages_for(rag)
    assert given is not None
    assert [given(q) for q in (fr, en)] == [["p fr"], ["p en"]]
    assert passages_for(replace(rag, key=replace(key, setting="zero-shot"))) is None


def test_job_keys_print_as_their_labels_and_are_read_by_field():
    from calm_rag.evaluation.cells import Cell
    from calm_rag.pipeline.keys import JobKey

    train = JobKey.training(1, "zero-shot").in_language("en")
    evaluation = JobKey.evaluation("heldout", "after", "rag")
    assert (str(train), str(evaluation)) == ("r1/train/zero-shot/en", "heldout/after/rag")
    assert evaluation.cell == Cell("heldout", "after") and train.cell is None
    assert Cell.parse("heldout/after") == evaluation.cell
    assert Cell("heldout", "after").file_stem == "heldout-after"
    with pytest.raises(ValueError, match="round and cell"):
        JobKey("rag")
    with pytest.raises(ValueError, match="split/phase"):
        Cell.parse("heldout")
