"""Where the ``hf`` sampler and the log-prob scorer run: ``device`` and ``device_map``.

On this CPU machine the resolution is what is tested: ``auto`` is the CPU here (and the first
GPU where torch sees one), a GPU asked for where there is none is an InputError naming the key,
and the scorer follows the ``hf`` sampler's choice.
"""

from __future__ import annotations

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from calm_rag.runtime.hardware import ENV_VAR, check_device, resolve_device, resolve_dtype
from calm_rag.sampling import HFOptions, HFSampler, LetterScorer, make_sampler

NO_GPU = pytest.mark.skipif("__import__('torch').cuda.is_available()",
                            reason="checks what happens without a GPU")


@pytest.mark.parametrize(("device", "gpus", "chosen"), [
    ("auto", 0, "cpu"), ("auto", 2, "cuda"), ("cpu", 0, "cpu"), ("cpu", 4, "cpu"),
    ("cuda", 1, "cuda"), ("cuda:1", 2, "cuda:1"), ("cuda:0", 1, "cuda:0"),
])
def test_a_device_resolves_to_what_the_machine_has(device, gpus, chosen):
    assert resolve_device(device, gpus=gpus) == chosen


@pytest.mark.parametrize(("device", "gpus", "says"), [
    ("cuda", 0, "torch sees no GPU"), ("cuda:0", 0, "torch sees no GPU"),
    ("cuda:2", 2, "torch sees 2 GPUs"), ("cuda:1", 1, "torch sees 1 GPU"),
])
def test_a_gpu_that_is_not_there_names_the_key(device, gpus, says):
    with pytest.raises(InputError) as err:
        resolve_device(device, field="generator.options.device", gpus=gpus)
    assert err.value.field == "generator.options.device"
    assert says in str(err.value) and "CUDA_VISIBLE_DEVICES" in str(err.value)


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", ""])
def test_a_device_that_is_no_device_is_refused(device):
    with pytest.raises(InputError) as err:
        check_device("device", device)
    assert err.value.field == "device" and "auto, cpu, cuda, cuda:N" in str(err.value)


def test_device_map_is_null_or_auto_and_not_with_the_cpu():
    check_device("device", "auto", "auto")
    check_device("device", "cuda:1", "auto")
    with pytest.raises(InputError) as err:
        check_device("generator.options.device", "auto", "balanced")
    assert err.value.field == "generator.options.device_map"
    with pytest.raises(InputError, match="leave device_map null") as err:
        HFOptions(device="cpu", device_map="auto")
    assert err.value.field == "device_map"


def test_this_machine_resolves_auto_to_its_own_devices():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected


def test_auto_dtype_follows_the_device(monkeypatch):
    """On the CPU the CPU's flags decide (the override here); a device map or no device
    leaves it to what torch sees."""
    monkeypatch.setenv(ENV_VAR, "0")
    assert resolve_dtype("auto", gpu=False) == "float32"
    monkeypatch.setenv(ENV_VAR, "1")
    assert resolve_dtype("auto", gpu=False) == "bfloat16"
    assert resolve_dtype("float32", gpu=True) == "float32"


def test_hf_options_check_the_device_with_the_config_keys_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ngenerator:\n  backend: hf\n  options:\n    device: gpu\n",
                    encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert (err.value.field, err.value.line) == ("generator.options.device", 5)
    path.write_text("name: x\ngenerator:\n  backend: hf\n  options:\n    device: cuda:1\n"
                    "    device_map: auto\n", encoding="utf-8")
    loaded = load_experiment(path)  # a GPU config is valid anywhere; the GPU is checked on load
    assert (loaded.generator.options.device, loaded.generator.options.device_map) == (
        "cuda:1", "auto")


@NO_GPU
def test_the_hf_sampler_asked_for_a_gpu_without_one_names_the_key(tiny_model):
    with pytest.raises(InputError) as err:
        make_sampler("hf", {"device": "cuda"}, model=tiny_model)
    assert err.value.field == "generator.options.device" and "no GPU" in str(err.value)


@NO_GPU
def test_the_scorer_asked_for_a_gpu_without_one_names_the_key(tiny_model):
    with pytest.raises(InputError) as err:
        LetterScorer.load(str(tiny_model), device="cuda:0")
    assert err.value.field == "generator.options.device"
    with pytest.raises(InputError) as err:
        LetterScorer.load(str(tiny_model), device="tpu")
    assert err.value.field == "generator.options.device"


@NO_GPU
def test_auto_runs_the_sampler_and_the_scorer_on_the_cpu_here(tiny_model):
    sampler = HFSampler(tiny_model, HFOptions(dtype="float32", progress=False))
    scorer = LetterScorer.load(str(tiny_model), progress=False)
    assert sampler.model.device.type == "cpu" and scorer.model.device.type == "cpu"


def test_the_scorer_follows_the_hf_samplers_choice(tmp_path, monkeypatch):
    from calm_rag.pipeline.model_ref import ModelRef
    from calm_rag.pipeline.scoring import ScoringModel, scoring_dtype

    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ngenerator:\n  backend: hf\n  options:\n    device: cpu\n",
                    encoding="utf-8")
    model = ModelRef("base", "digest", adapter="adapter")
    scoring = ScoringModel.of(load_experiment(path), model)
    assert (scoring.device, scoring.device_map, scoring.model.adapter) == ("cpu", None, "adapter")
    path.write_text("name: x\ngenerator:\n  backend: vllm\n", encoding="utf-8")
    vllm = ScoringModel.of(load_experiment(path), model)
    assert (vllm.device, vllm.device_map) == ("auto", None)
    monkeypatch.setenv(ENV_VAR, "0")
    assert scoring_dtype("cpu") == "float32"
    monkeypatch.setenv(ENV_VAR, "1")
    assert scoring_dtype("cpu") == "bfloat16"
