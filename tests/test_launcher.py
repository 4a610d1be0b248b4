"""Training at scale: the ``align:`` keys of issue 12, the adapter-only default, and DPO under
``accelerate launch`` (two CPU processes over gloo) with checkpoints, resume and TensorBoard.

The launched runs are real (accelerate, torchrun, TRL, PEFT) on the 2-layer Llama of
``tests/tiny_model.py`` with a handful of rows; each launch spends most of its time starting
two Python processes.
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

from calm_rag.config import describe
from calm_rag.errors import InputError
from calm_rag.experiment import Experiment, load_experiment
from calm_rag.training import AlignConfig, LoraConfig, train_dpo
from calm_rag.training.checkpoints import SEAL, checkpoint_folder, last_checkpoint
from calm_rag.training.launch import PARENT_ENV, config_file, launch_command
from tests.helpers import TINY_ALIGN, local_trackers, milk_pairs

ROOT = Path(__file__).resolve().parent.parent
TINY = TINY_ALIGN


def _experiment(tmp_path: Path, align: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text("name: t\ndata:\n  languages: [en]\nalign:\n" + align, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- config


def test_describe_lists_every_new_align_key():
    manual = "\n".join(describe(Experiment))
    for key in ("merge", "launcher", "num_processes", "num_machines", "machine_rank",
                "main_process_ip", "main_process_port", "distributed", "save_steps",
                "report_to", "gradient_checkpointing", "trainer"):
        assert f"\nalign.{key} (" in manual, key
    assert "fp16" in manual


def test_unknown_trainer_key_names_the_key_file_and_line(tmp_path):
    path = _experiment(tmp_path, "  trainer:\n    warmup_steps: 2\n    lr_sheduler_type: cosine\n")
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert err.value.field == "align.trainer.lr_sheduler_type"
    assert err.value.path == str(path) and err.value.line == 7
    assert "DPOConfig" in err.value.message


def test_trainer_key_set_by_a_typed_key_is_refused_naming_both(tmp_path):
    path = _experiment(tmp_path, "  trainer:\n    num_train_epochs: 3\n")
    with pytest.raises(InputError, match="align.epochs") as err:
        load_experiment(path)
    assert err.value.field == "align.trainer.num_train_epochs"


@pytest.mark.parametrize(("trainer", "key"), [
    ("{save_total_limit: 1}", "save_total_limit"),  # the one kept may be half-written
    ("{save_only_model: true}", "save_only_model"),  # would resume without the optimizer
])
def test_checkpoints_a_run_cannot_resume_from_are_refused(tmp_path, trainer, key):
    path = _experiment(tmp_path, f"  save_steps: 10\n  trainer: {trainer}\n")
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert err.value.field == f"align.trainer.{key}"
    without = _experiment(tmp_path, f"  trainer: {trainer}\n")
    assert load_experiment(without).align.trainer  # fine when nothing resumes
    kept = _experiment(tmp_path, "  save_steps: 10\n  trainer: {save_total_limit: 2}\n")
    assert load_experiment(kept).align.trainer == {"save_total_limit": 2}


def test_trainer_keys_follow_the_method(tmp_path):
    # dataset_text_field is SFTConfig's, not DPOConfig's
    config = load_experiment(_experiment(
        tmp_path, "  method: sft\n  trainer: {dataset_text_field: text}\n")).align
    assert config.trainer == {"dataset_text_field": "text"}
    with pytest.raises(InputError, match="DPOConfig"):
        AlignConfig(trainer={"dataset_text_field": "text"})


@pytest.mark.parametrize(("align", "field"), [
    ("  report_to: tensorbord\n", "align.report_to"),
    ("  num_processes: 2\n", "align.launcher"),
    ("  launcher: accelerate\n  distributed: zero4\n", "align.distributed"),
    ("  launcher: accelerate\n  num_machines: 2\n", "align.main_process_ip"),
    ("  save_steps: 0\n", "align.save_steps"),
    ("  precision: fp8\n", "align.precision"),
])
def test_wrong_values_name_the_key(tmp_path, align, field):
    path = _experiment(tmp_path, align)
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert err.value.field == field and err.value.path == str(path) and err.value.line


def test_report_to_takes_one_tracker_or_a_list(monkeypatch, tmp_path):
    local_trackers(monkeypatch, tmp_path)  # an MLflow store that opens
    assert AlignConfig().trackers == ["none"]
    assert AlignConfig(report_to="tensorboard").trackers == ["tensorboard"]
    assert AlignConfig(report_to=["tensorboard", "mlflow"]).trackers == ["tensorboard", "mlflow"]
    again = AlignConfig(**{**AlignConfig(report_to=["mlflow"]).to_dict(), "lora": LoraConfig()})
    assert again.trackers == ["mlflow"]


def test_launch_command_for_cpu_ranks_and_for_shipped_sharding(tmp_path):
    config = AlignConfig(launcher="accelerate", num_processes=2, threads=1)
    command = launch_command(config, tmp_path)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in command  # torchrun starts the ranks; on a CPU they use gloo
    assert command[-3:] == ["-m", "calm_rag.training.launched", str(tmp_path)]
    sharded = launch_command(AlignConfig(launcher="accelerate", num_processes=8,
                                         distributed="zero3"), tmp_path)
    assert sharded[sharded.index("--config_file") + 1] == str(config_file("zero3"))
    assert "--multi_gpu" not in sharded


@pytest.mark.parametrize("name", ["zero2", "zero3", "fsdp"])
def test_shipped_sharding_configs_are_accelerate_configs(name):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config_file(name)))
    assert loaded.distributed_type.value == ("FSDP" if name == "fsdp" else "DEEPSPEED")


def test_last_checkpoint_is_the_newest_sealed_one(tmp_path):
    # checkpoint-12: rank 0 wrote its trainer state, but a kill came before every rank had
    # saved (no seal), so another rank's files may be half-written
    for step, sealed in [(2, True), (10, True), (12, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        if sealed:
            (tmp_path / f"checkpoint-{step}" / SEAL).write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert last_checkpoint(tmp_path / "none") is None


# --------------------------------------------------------------------------- training


def _pairs(count: int = 4):
    return milk_pairs()[:count]


@pytest.mark.slow
def test_adapter_only_by_default_and_a_second_round_goes_on_from_it(tiny_model, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    first = train_dpo(str(tiny_model), _pairs(), AlignConfig(**TINY), tmp_path / "r1")
    assert first.merged_dir is None and not (tmp_path / "r1" / "merged").exists()
    second = train_dpo(str(tiny_model), _pairs(), AlignConfig(**TINY), tmp_path / "r2",
                       adapter=str(first.adapter_dir))
    # the same adapter trained further (not a second one stacked), without TRL's reference copy
    assert not (second.adapter_dir / "ref").exists()
    one = load_file(first.adapter_dir / "adapter_model.safetensors")
    two = load_file(second.adapter_dir / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    assert any(not torch.equal(one[k], two[k]) for k in one)
    saved = json.loads((tmp_path / "r2" / "train_log.json").read_text())
    assert saved["processes"] == 1 and saved["resumed_from"] is None


LAUNCHED = {**TINY, "launcher": "accelerate", "num_processes": 2}


@pytest.mark.slow
def test_dpo_under_accelerate_with_two_cpu_processes(tiny_model, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    local_trackers(monkeypatch, tmp_path / "trackers")  # the ranks inherit the environment
    out = tmp_path / "align"
    config = AlignConfig(**LAUNCHED, report_to=["tensorboard", "mlflow"], save_steps=1)
    result = train_dpo(str(tiny_model), _pairs(), config, out)
    saved = json.loads((out / "train_log.json").read_text())
    assert saved["processes"] == 2 and saved["backend"] == "gloo"
    # 4 rows, 1 a rank, 2 ranks: 2 optimiser steps, logged once (by rank 0)
    assert [s["step"] for s in saved["steps"]] == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter", "loss.png", "tensorboard", "trackers.json", "train_log.json"]
    # rank 0 recorded the MLflow run it logged to; the parent reads it from the folder
    (tracked,) = MlflowClient().search_runs(["0"])
    assert result.trackers == {"mlflow": {
        "tracking_uri": (tmp_path / "trackers" / "mlruns").as_uri(), "experiment_id": "0",
        "run_id": tracked.info.run_id, "name": tracked.info.run_name}}
    assert tracked.data.metrics["train_loss"] == saved["summary"]["train_loss"]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not checkpoint_folder(out).exists()  # removed once the adapter is written
    assert not list(tmp_path.glob(".align.*"))



@pytest.mark.slow
def test_a_ranks_input_error_is_raised_here_as_the_same_error(tiny_model, tmp_path):
    """The ranks hand their InputError over as a child_process worker does."""
    config = AlignConfig(**{**LAUNCHED, "max_length": 8})  # every prompt is longer
    with pytest.raises(InputError, match="no row is left to train on") as err:
        train_dpo(str(tiny_model), _pairs(), config, tmp_path / "align")
    assert err.value.field == "align.max_length" and "raise align.max_length" in err.value.hint
    assert not (tmp_path / "align").exists() and not list(tmp_path.glob(".align.*"))

_SCRIPT = """
import sys
from pathlib import Path
from calm_rag.training import AlignConfig, LoraConfig, train_dpo
from tests.helpers import TINY_ALIGN, milk_pairs
launched = {**TINY_ALIGN, "launcher": "accelerate", "num_processes": 2}
config = AlignConfig(**{**launched, "epochs": 3, "save_steps": 1})
train_dpo(sys.argv[1], milk_pairs()[:4], config, Path(sys.argv[2]))
"""


def _start(tiny_model: Path, out: Path, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, "-c", _SCRIPT, str(tiny_model), str(out)],
                                cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _first_error(log: Path) -> str:
    """The first traceback of a failed launch (a rank's, above the launcher's) and the end."""
    text = log.read_text()
    first = text.find("Traceback")
    return text[max(first, 0):][:4000] + "\n[...]\n" + text[-1500:]


def _ranks_of(pid: int) -> list[int]:
    """Processes started for the run ``pid`` (they carry its pid in their environment)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"{PARENT_ENV}={pid}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_killed_launched_dpo_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "align"
    run = _start(tiny_model, out, tmp_path / "first.log")
    checkpoints = checkpoint_folder(out)
    deadline = time.monotonic() + 600
    while last_checkpoint(checkpoints) is None and run.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint in 10 minutes"
        time.sleep(0.2)
    assert run.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.kill(run.pid, signal.SIGKILL)  # kill -9 of the pipeline's process
    run.wait()
    while _ranks_of(run.pid):  # the ranks notice their parent is gone and stop
        assert time.monotonic() < deadline, "the ranks outlived their killed parent"
        time.sleep(0.5)
    assert not out.exists()
    kept = last_checkpoint(checkpoints)
    assert kept is not None

    assert json.loads((kept / SEAL).read_text())["processes"] == 2  # both ranks had saved

    again = _start(tiny_model, out, tmp_path / "second.log")
    assert again.wait(timeout=600) == 0, _first_error(tmp_path / "second.log")
    said = (tmp_path / "second.log").read_text()
    resumed = json.loads((out / "train_log.json").read_text())["resumed_from"]
    assert resumed is not None and int(resumed.split("-")[1]) >= int(kept.name.split("-")[1])
    assert f"resuming from {resumed}" in said
    # 4 rows x 3 epochs over 2 ranks: 6 steps; the second run logged only those after resuming
    steps = json.loads((out / "train_log.json").read_text())["steps"]
    assert steps[-1]["step"] == 6 and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not checkpoints.exists()
