"""``align.report_to`` also gets the evaluation's figures, and a training read from the cache
still links its TensorBoard events into the run (or says it has none, and how to get them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calm_rag.errors import InputError
from calm_rag.evaluation.trackers import TrackedRun
from calm_rag.evaluation.tracking import EVAL_WRITERS, eval_scalars, log_evaluation, tag
from calm_rag.io import write_json
from calm_rag.pipeline.run_folder import training_links
from calm_rag.pipeline.stages import Round
from calm_rag.pipeline.stages.align import cached_tracking, trained_tracking
from calm_rag.runs import metric_rows
from calm_rag.training import AlignConfig, train_dpo
from calm_rag.training.common import TrainResult
from calm_rag.training.config import TRACKERS
from calm_rag.training.tracker_runs import write_tracker_runs
from calm_rag.vote.voting import Tally
from tests.helpers import (
    TINY_ALIGN,
    experiment,
    fresh_wandb_settings,
    latest_run,
    local_trackers,
    milk_pairs,
    run_cli,
    write_experiment,
)

GRID = {"cells": {"heldout/after": {"metrics": {"zero-shot": {
    "n_questions": 2, "languages": ["en", "fr"],
    "accuracy": {"en": {"value": 0.5, "ci95": [0.0, 1.0], "n": 2},
                 "fr": {"value": 1.0, "ci95": [1.0, 1.0], "n": 2}},
    "extraction_rate": {"en": 1.0, "fr": 0.5},
    "consistency": {"value": 0.25, "ci95": [0.0, 0.5], "n": 2},
    "agreement": {"en": {"en": 1.0, "fr": 0.5}, "fr": {"en": 0.5, "fr": 1.0}},
    "krippendorff_alpha": {"value": None, "ci95": None, "n": 2},
    "rankc": {"value": 0.625, "ci95": [0.5, 0.75], "n": 2}}}}}}


def read_scalars(folder: Path) -> dict[str, float]:
    """Every scalar of the event files in ``folder``, by tag (each logged once, at step 0)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    read = {}
    for name in events.Tags()["scalars"]:
        (point,) = events.Scalars(name)
        assert point.step == 0
        read[name] = point.value
    return read


def test_eval_scalars_are_the_grids_figures_by_tag():
    assert eval_scalars(GRID) == {
        "eval/heldout-after/zero-shot/accuracy/en": 0.5,
        "eval/heldout-after/zero-shot/accuracy/fr": 1.0,
        "eval/heldout-after/zero-shot/extraction_rate/en": 1.0,
        "eval/heldout-after/zero-shot/extraction_rate/fr": 0.5,
        "eval/heldout-after/zero-shot/consistency": 0.25,
        "eval/heldout-after/zero-shot/rankc": 0.625,
        "eval/heldout-after/zero-shot/accuracy/mean": 0.75,  # (0.5 + 1.0) / 2
    }  # no alpha (not computed), no agreement table (a pair's figures)


RUN = TrackedRun("tiny")


def test_tensorboard_gets_the_scalars(tmp_path):
    assert log_evaluation(tmp_path, GRID, ["tensorboard"], RUN) == {"tensorboard": "tensorboard"}
    assert read_scalars(tmp_path / "tensorboard") == eval_scalars(GRID)
    assert log_evaluation(tmp_path / "none", GRID, ["none"], RUN) == {}
    assert not (tmp_path / "none").exists()


def test_every_tracker_report_to_takes_has_a_writer():
    assert set(EVAL_WRITERS) == set(TRACKERS) - {"none"}


def test_wandb_gets_the_scalars_offline_where_the_training_logs(tmp_path, monkeypatch):
    local_trackers(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_PROJECT", "calm")  # WandbCallback's project: the training's
    run_folder = tmp_path / "runs" / "tiny" / "run"
    run_folder.mkdir(parents=True)
    where = log_evaluation(run_folder, GRID, ["wandb"], RUN)["wandb"]
    assert isinstance(where, dict)
    assert (where["project"], where["name"], where["mode"]) == ("calm", "tiny-evaluation",
                                                                "offline")
    offline = (run_folder / where["dir"]).resolve()
    assert offline.parent == tmp_path / "wandb"  # WANDB_DIR, as for the training
    assert offline.name.startswith("offline-run-") and offline.name.endswith(where["run_id"])
    read = read_wandb(offline)
    assert (read["project"], read["name"], read["state"], read["step"]) == (
        "calm", "tiny-evaluation", "finished", 0)
    assert {k: v for k, v in read["summary"].items() if not k.startswith("_")} == (
        eval_scalars(GRID))
    # WANDB_RUN_ID names the training's run (open in this process): the figures get their own.
    import wandb

    monkeypatch.setenv("WANDB_RUN_ID", "training1")
    fresh_wandb_settings()
    training = wandb.init()
    again = log_evaluation(run_folder, GRID, ["wandb"], RUN)["wandb"]
    training.finish()
    assert isinstance(again, dict) and again["run_id"] not in (where["run_id"], "training1")
    assert read_wandb((run_folder / again["dir"]).resolve())["name"] == "tiny-evaluation"


def read_wandb(offline: Path) -> dict[str, Any]:
    """An offline W&B run as wandb's own reader of its transaction log sees it."""
    return json.loads(subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(offline)],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout)


def test_mlflow_gets_the_scalars_in_the_trainings_experiment(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    local_trackers(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "calm")  # MLflowCallback's experiment
    where = log_evaluation(tmp_path, GRID, ["mlflow"], RUN)["mlflow"]
    assert isinstance(where, dict)
    assert where["tracking_uri"] == (tmp_path / "mlruns").as_uri()
    client = MlflowClient()
    run = client.get_run(where["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "calm"
    assert (run.info.run_name, run.info.status) == ("tiny-evaluation", "FINISHED")
    assert run.data.metrics == eval_scalars(GRID)
    assert {m.step for name in run.data.metrics
            for m in client.get_metric_history(run.info.run_id, name)} == {0}
    # MLFLOW_RUN_ID: the training's steps went into that run; the figures join them there.
    training = client.create_run(run.info.experiment_id, run_name="training")
    monkeypatch.setenv("MLFLOW_RUN_ID", training.info.run_id)
    where = log_evaluation(tmp_path, GRID, ["mlflow"], RUN)["mlflow"]
    assert isinstance(where, dict)
    assert (where["run_id"], where["name"]) == (training.info.run_id, "training")
    assert client.get_run(training.info.run_id).data.metrics == eval_scalars(GRID)


def test_trackio_gets_the_scalars_in_its_local_store(tmp_path, monkeypatch):
    local_trackers(monkeypatch, tmp_path)
    where = log_evaluation(tmp_path / "run", GRID, ["trackio"], RUN)["trackio"]
    assert isinstance(where, dict)
    assert (where["project"], where["name"]) == ("huggingface", "tiny-evaluation")
    from trackio.sqlite_storage import SQLiteStorage

    assert (tmp_path / "run" / where["store"]).resolve() == tmp_path / "trackio" / "huggingface.db"
    (logged,) = SQLiteStorage.get_logs("huggingface", run_id=where["run_id"])
    assert logged.pop("step") == 0
    logged.pop("timestamp")
    assert logged == eval_scalars(GRID)
    # The project align.trainer sets for the training (TrackioCallback's args.project).
    where = log_evaluation(tmp_path / "run", GRID, ["trackio"],
                           TrackedRun("tiny", {"project": "calm"}))["trackio"]
    assert [log["step"] for log in SQLiteStorage.get_logs("calm", run_id=where["run_id"])] == [0]


def test_a_tracker_that_fails_at_the_end_leaves_the_run_its_other_trackers(
        tmp_path, monkeypatch, caplog):
    local_trackers(monkeypatch, tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # the store now refuses to open
    assert log_evaluation(tmp_path, GRID, ["mlflow", "tensorboard"], RUN) == {
        "tensorboard": "tensorboard"}
    assert ("align.report_to: the evaluation's figures did not reach mlflow (MlflowException: "
            "The filesystem tracking backend") in caplog.text


def test_wandb_without_an_account_is_refused_at_load_unless_offline(tmp_path, monkeypatch):
    local_trackers(monkeypatch, tmp_path)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    fresh_wandb_settings()
    with pytest.raises(InputError) as err:
        AlignConfig(report_to="wandb")
    assert err.value.field == "report_to"
    assert "'wandb' has no API key for " in str(err.value)
    assert "export WANDB_MODE=offline" in str(err.value.hint)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key: wandb checks it when it logs in
    fresh_wandb_settings()
    assert AlignConfig(report_to="wandb").trackers == ["wandb"]
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "offline")
    fresh_wandb_settings()
    assert AlignConfig(report_to="wandb").trackers == ["wandb"]


def test_mlflow_whose_store_cannot_open_is_refused_at_load(tmp_path, monkeypatch):
    local_trackers(monkeypatch, tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    with pytest.raises(InputError) as err:
        AlignConfig(report_to=["tensorboard", "mlflow"])
    assert str(err.value) == (
        f"field 'report_to': 'mlflow' cannot open its tracking store "
        f"{(tmp_path / 'mlruns').as_uri()}: The filesystem tracking backend (e.g., './mlruns') "
        "is in maintenance mode and will not receive further updates (set MLFLOW_TRACKING_URI "
        "to a server (http://...), or pip install mlflow for its sqlite store, or "
        "MLFLOW_TRACKING_URI=file:./mlruns with MLFLOW_ALLOW_FILE_STORE=true)")


def test_trackio_on_a_space_without_a_token_is_refused_at_load(tmp_path, monkeypatch):
    local_trackers(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert AlignConfig(report_to="trackio").trackers == ["trackio"]  # the local store
    monkeypatch.setenv("TRACKIO_SPACE_ID", "me/calm")  # or align.trainer.trackio_space_id
    with pytest.raises(InputError) as err:
        AlignConfig(report_to="trackio")
    assert str(err.value).startswith("field 'report_to': 'trackio' logs to the Space me/calm, "
                                     "and no Hugging Face token is set")


def _training(folder: Path, report_to: str | list[str], events: bool) -> TrainResult:
    if events:
        (folder / "tensorboard").mkdir(parents=True)
    return TrainResult(folder, "dpo", 4, [], 1.0, {"report_to": report_to})


def test_a_cached_training_says_where_its_events_are_or_that_it_has_none(tmp_path):
    logged = _training(tmp_path / "a", ["tensorboard"], events=True)
    assert cached_tracking("r1", logged, ["tensorboard"]) == (
        "align r1: the training was read from the cache (trained with report_to: "
        "tensorboard; report_to is not part of the cache key); its TensorBoard events are in "
        f"{tmp_path / 'a' / 'tensorboard'} (links.json: rounds)")
    silent = _training(tmp_path / "b", "none", events=False)
    assert cached_tracking("r1", silent, ["tensorboard", "wandb"]) == (
        "align r1: the training was read from the cache (trained with report_to: none; "
        "report_to is not part of the cache key); it logged no TensorBoard events to link; "
        "no training steps go to wandb (the evaluation's figures do); --force align trains "
        "it again and logs it")
    assert cached_tracking("r1", silent, ["none"]) is None


WANDB_RUN = {"project": "calm", "run_id": "1a2b", "mode": "offline",
             "dir": "../../wandb/offline-run-20260101_000000-1a2b"}
MLFLOW_RUN = {"tracking_uri": "file:///srv/mlruns", "experiment_id": "3", "run_id": "c0ffee",
              "name": "quiet-fox-7"}


def test_a_cached_training_names_the_tracker_runs_it_recorded_and_the_run_links_them(tmp_path):
    logged = _training(tmp_path / "cache" / "align" / "k1", ["wandb", "mlflow"], events=False)
    write_json(logged.folder / "trackers.json", {"wandb": WANDB_RUN, "mlflow": MLFLOW_RUN})
    assert cached_tracking("r1", logged, ["wandb", "mlflow", "trackio"]) == (
        "align r1: the training was read from the cache (trained with report_to: wandb, "
        "mlflow; report_to is not part of the cache key); its wandb run calm/1a2b (links.json: "
        "rounds); its mlflow run 3/c0ffee (links.json: rounds); no training steps go to "
        "trackio (the evaluation's figures do); --force align trains it again and logs it")
    assert trained_tracking("r1", logged) == (  # the same training, as it finished
        "align r1: training steps logged to wandb run calm/1a2b, mlflow run 3/c0ffee "
        "(links.json: rounds)")
    assert cached_tracking("r1", logged, ["mlflow"]).endswith(  # nothing left to --force
        "its mlflow run 3/c0ffee (links.json: rounds)")
    # Trained with wandb by a calm_rag that kept no trackers.json: not "no steps went there".
    unrecorded = _training(tmp_path / "old", ["wandb"], events=False)
    assert cached_tracking("r1", unrecorded, ["wandb"]).endswith(
        "; where its wandb run went was not recorded; --force align trains it again and logs it")
    # links.json: the locators, their folders now relative to the run folder.
    run_folder = tmp_path / "runs" / "tiny" / "20260101-000000"
    (entry,) = training_links(run_folder, [Round([], Tally([], {}), [], logged)])["rounds"]
    assert entry == {"round": 1, "training": "../../../cache/align/k1",
                     "wandb": WANDB_RUN | {"dir": "../../../cache/wandb/"
                                                  "offline-run-20260101_000000-1a2b"},
                     "mlflow": MLFLOW_RUN}


def test_a_tracker_run_not_found_is_left_out_and_named_never_guessed(tmp_path, caplog):
    write_tracker_runs(tmp_path, ["tensorboard", "wandb", "mlflow"], {"mlflow": MLFLOW_RUN})
    assert json.loads((tmp_path / "trackers.json").read_text()) == {"mlflow": MLFLOW_RUN}
    assert ("align.report_to: wandb had no run open when the training began; trackers.json "
            "leaves it out") in caplog.text
    write_tracker_runs(tmp_path / "tb", ["tensorboard"], {})  # TensorBoard's events are a folder
    assert not (tmp_path / "tb").exists()
    # Resumed from a checkpoint: the runs of the process that finished, said to be so.
    write_tracker_runs(tmp_path, ["mlflow"], {"mlflow": MLFLOW_RUN}, "checkpoint-2")
    assert json.loads((tmp_path / "trackers.json").read_text()) == {
        "mlflow": MLFLOW_RUN | {"resumed_from": "checkpoint-2"}}
    assert not (tmp_path / "tb").exists()


@pytest.mark.slow
def test_a_training_records_where_its_tracker_runs_went(tiny_model, tmp_path, monkeypatch):
    import wandb
    from mlflow import MlflowClient
    from trackio.sqlite_storage import SQLiteStorage

    local_trackers(monkeypatch, tmp_path / "trackers")
    monkeypatch.setenv("WANDB_PROJECT", "calm")
    config = AlignConfig(**TINY_ALIGN, report_to=["wandb", "mlflow", "trackio"],
                         trainer={"run_name": "r1-dpo"})
    result = train_dpo(str(tiny_model), milk_pairs()[:2], config, tmp_path / "align")
    wandb.finish()  # WandbCallback leaves its run open in the process that trained
    runs = json.loads((tmp_path / "align" / "trackers.json").read_text())
    assert runs == result.trackers and list(runs) == ["wandb", "mlflow", "trackio"]
    train_loss = json.loads((tmp_path / "align" / "train_log.json").read_text())[
        "summary"]["train_loss"]
    mlflow_run = MlflowClient().get_run(runs["mlflow"]["run_id"])
    assert runs["mlflow"] == {"tracking_uri": (tmp_path / "trackers" / "mlruns").as_uri(),
                              "experiment_id": mlflow_run.info.experiment_id,
                              "run_id": mlflow_run.info.run_id, "name": "r1-dpo"}
    assert mlflow_run.data.metrics["train_loss"] == train_loss
    offline = (tmp_path / "align" / runs["wandb"]["dir"]).resolve()
    assert offline.parent == tmp_path / "trackers" / "wandb"
    assert offline.name.endswith(runs["wandb"]["run_id"])
    read = read_wandb(offline)
    assert (read["project"], read["name"], read["run_id"]) == ("calm", "r1-dpo",
                                                              runs["wandb"]["run_id"])
    assert read["summary"]["train_loss"] == pytest.approx(train_loss)
    assert runs["trackio"]["name"] == "r1-dpo"
    assert (tmp_path / "align" / runs["trackio"]["store"]).resolve() == (
        tmp_path / "trackers" / "trackio" / "huggingface.db")
    logged = SQLiteStorage.get_logs("huggingface", run_id=runs["trackio"]["run_id"])
    assert [row["train/loss"] for row in logged if "train/loss" in row] == pytest.approx(
        [step["loss"] for step in result.log])


def _float32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard keeps a scalar as a 32-bit float


@pytest.mark.slow
def test_report_to_on_a_cached_training_links_events_and_logs_the_evaluation(
        sharp_model, tmp_path, capsys, monkeypatch):
    from mlflow import MlflowClient

    local_trackers(monkeypatch, tmp_path / "trackers")
    runs = tmp_path / "runs"
    assert run_cli(write_experiment(tmp_path, experiment(sharp_model, runs))) == 0
    capsys.readouterr()
    tracked = write_experiment(tmp_path, experiment(sharp_model, runs, align__report_to=[
        "tensorboard", "wandb", "mlflow", "trackio"]))
    assert run_cli(tracked) == 0  # the training is read from the cache: no events to link
    said = "".join(capsys.readouterr())
    assert ("the training was read from the cache (trained with report_to: none; report_to is "
            "not part of the cache key); it logged no TensorBoard events to link; no training "
            "steps go to wandb, mlflow, trackio (the evaluation's figures do); --force align "
            "trains it again and logs it") in said
    run = latest_run(runs)
    links = json.loads((run / "links.json").read_text())
    assert "tensorboard" not in links["rounds"][0]
    assert links["evaluation"]["tensorboard"] == "tensorboard"
    assert f"evaluation metrics logged to tensorboard: {run / 'tensorboard'}" in said
    grid = json.loads((run / "metrics.json").read_text())
    scalars = read_scalars(run / links["evaluation"]["tensorboard"])
    for cell, setting, metric, lang, value, *_ in metric_rows(grid):
        if lang is None or "/" not in lang:
            assert scalars[tag(cell, setting, metric, lang)] == _float32(value)
    assert {name.split("/")[1] for name in scalars} == {
        "train-before", "heldout-before", "train-after", "heldout-after"}
    mlflow_run = MlflowClient().get_run(links["evaluation"]["mlflow"]["run_id"])
    assert mlflow_run.data.metrics == eval_scalars(grid)  # the figures, unrounded
    assert links["evaluation"]["trackio"]["name"] == "tiny-evaluation"
    assert links["evaluation"]["wandb"]["mode"] == "offline"

    assert run_cli(tracked, "--force", "align") == 0  # trained again, with its events
    forced = json.loads((latest_run(runs) / "links.json").read_text())["rounds"][0]
    assert run_cli(tracked) == 0  # and read from the cache: its events and runs linked
    said = "".join(capsys.readouterr())
    events = json.loads((latest_run(runs) / "links.json").read_text())["rounds"][0]
    assert events == forced  # the same links, fresh or cached (the run folders are siblings)
    folder = (latest_run(runs) / events["tensorboard"]).resolve()
    assert f"its TensorBoard events are in {folder} (links.json: rounds)" in said
    assert list(folder.glob("events.out.tfevents.*"))
    trained = [r for r in MlflowClient().search_runs(["0"]) if "train_loss" in r.data.metrics]
    assert len(trained) == 1  # MLflowCallback logged the forced training where the figures are
    assert events["mlflow"]["run_id"] == trained[0].info.run_id
    wandb_id = events["wandb"]["run_id"]  # its run is open till the process ends: not read here
    assert (latest_run(runs) / events["wandb"]["dir"] / f"run-{wandb_id}.wandb").is_file()
    trackio_run = events["trackio"]
    assert (f"align round 1: training steps logged to wandb run huggingface/{wandb_id}, mlflow run "
            f"0/{trained[0].info.run_id}, trackio run huggingface/{trackio_run['run_id']} "
            "(links.json: rounds)") in said  # the forced training, when it trained
    (line,) = [line for line in said.splitlines() if "training was read from the cache" in line]
    assert line.endswith(  # every tracker linked: no --force to suggest
        f"(trained with report_to: tensorboard, wandb, mlflow, trackio; report_to is not part "
        f"of the cache key); its TensorBoard events are in {folder} (links.json: rounds); its "
        f"wandb run huggingface/{wandb_id} (links.json: rounds); its mlflow run "
        f"0/{trained[0].info.run_id} (links.json: rounds); its trackio run "
        f"huggingface/{trackio_run['run_id']} (links.json: rounds)")
    from trackio.sqlite_storage import SQLiteStorage

    assert any("train/loss" in row for row in SQLiteStorage.get_logs(
        trackio_run["project"], run_id=trackio_run["run_id"]))
    evaluation = json.loads((latest_run(runs) / "links.json").read_text())["evaluation"]
    assert read_wandb(latest_run(runs) / evaluation["wandb"]["dir"])["summary"]["_step"] == 0
