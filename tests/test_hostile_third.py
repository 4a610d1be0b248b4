"""Hostile input, third pass: plugins that fail say so in one line, a killed run's staging
entries are swept at the next start (its lock free, its pid gone), and every value handed to
TRL is checked when the experiment loads."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import pytest
import yaml

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from tests.helpers import experiment, run_cli, write_experiment

ROOT = Path(__file__).resolve().parents[1]


def _load(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_experiment(path)


# ---------------------------------------------------------------------------- plugins


def _plugin_error(tmp_path: Path, files: dict[str, str], capsys, *flags: str) -> tuple[int, str]:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\nplugins:\n" + "".join(f"  - ./{n}\n" for n in files),
                   encoding="utf-8")
    code = main([*flags, "run", "--check", str(exp)])
    return code, capsys.readouterr().err


def test_a_plugin_that_raises_at_import_fails_in_one_line(tmp_path, capsys):
    code, err = _plugin_error(tmp_path, {"boom.py": """\
        x = 1
        raise RuntimeError("no API key in the plugin's settings")
        """}, capsys)
    assert code == 2
    assert err == (f"calm-rag run: error: {tmp_path / 'exp.yaml'}:3: field 'plugins[0]': "
                   f"plugin {tmp_path / 'boom.py'}:2 failed: RuntimeError: no API key in the "
                   "plugin's settings (fix the plugin; calm-rag -v shows its traceback)\n")


def test_verbose_shows_the_plugins_traceback(tmp_path):
    (tmp_path / "boom.py").write_text("raise KeyError('model')\n", encoding="utf-8")
    (tmp_path / "exp.yaml").write_text("name: x\nplugins: [./boom.py]\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "calm_rag.cli", "-v", "run", "--check",
                           str(tmp_path / "exp.yaml")], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert f'File "{tmp_path / "boom.py"}", line 1, in <module>' in done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        "failed: KeyError: 'model' (fix the plugin; calm-rag -v shows its traceback)")


def test_a_plugins_message_on_several_lines_is_made_one(tmp_path, capsys):
    code, err = _plugin_error(tmp_path, {"wordy.py": "raise ValueError('first\\n  second')\n"},
                              capsys)
    assert code == 2 and err.count("\n") == 1
    assert "failed: ValueError: first second (fix the plugin" in err


def test_two_plugins_registering_one_name_fail_in_one_line(tmp_path, capsys):
    part = """\
        from calm_rag.registries import TIE_POLICIES


        @TIE_POLICIES.register("coin")
        def coin(tied, samples, config):
            return tied[0]
        """
    from calm_rag.registries import TIE_POLICIES

    try:
        code, err = _plugin_error(tmp_path, {"one.py": part, "two.py": part}, capsys)
    finally:
        TIE_POLICIES.unregister("coin")  # the first plugin's part: other tests list the names
    assert code == 2 and err.count("\n") == 1
    assert (f"field 'plugins[1]': plugin {tmp_path / 'two.py'}:4 failed: RegistryError: a tie "
            f"policy named 'coin' is already registered (coin at {tmp_path / 'one.py'}:4)"
            in err)


def test_a_part_of_the_wrong_shape_fails_in_one_line(tmp_path, capsys):
    code, err = _plugin_error(tmp_path, {"shape.py": """\
        from calm_rag.registries import METRICS

        METRICS.register("answer_count", 42)
        """}, capsys)
    assert code == 2
    assert (f"field 'plugins[0]': plugin {tmp_path / 'shape.py'}:3 failed: RegistryError: "
            "metric 'answer_count' must be callable with 2 positional arguments" in err)


def test_a_plugin_with_a_syntax_error_names_its_line(tmp_path, capsys):
    code, err = _plugin_error(tmp_path, {"typo.py": "a = 1\ndef f(:\n    pass\n"}, capsys)
    assert code == 2
    assert f"plugin {tmp_path / 'typo.py'}:2 failed: SyntaxError: invalid syntax" in err


def test_a_plugin_module_whose_own_import_fails_is_not_called_missing(tmp_path, monkeypatch,
                                                                      capsys):
    (tmp_path / "needs_x.py").write_text("import no_such_package_h13\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\nplugins: [needs_x]\n", encoding="utf-8")
    assert main(["run", "--check", str(exp)]) == 2
    err = capsys.readouterr().err
    assert (f"field 'plugins[0]': plugin {tmp_path / 'needs_x.py'}:1 failed: "
            "ModuleNotFoundError: No module named 'no_such_package_h13'" in err)


def test_a_fixed_plugin_imports_again_in_the_same_process(tmp_path):
    """A plugin that registered a part and then failed leaves no part behind: fixed, it
    registers the same name again (a notebook)."""
    from calm_rag.registries import TIE_POLICIES

    plugin = tmp_path / "half.py"
    plugin.write_text("from calm_rag.registries import TIE_POLICIES\n\n"
                      "@TIE_POLICIES.register('half-way')\ndef half(t, s, c):\n    return None\n"
                      "\nraise ValueError('not configured')\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"half.py:7 failed: ValueError: not configured"):
        _load(tmp_path, {"name": "x", "plugins": ["./half.py"]})
    assert "half-way" not in TIE_POLICIES
    plugin.write_text(plugin.read_text().replace("raise ValueError('not configured')", ""),
                      encoding="utf-8")
    try:
        _load(tmp_path, {"name": "x", "plugins": ["./half.py"]})
        assert "half-way" in TIE_POLICIES
    finally:
        TIE_POLICIES.unregister("half-way")


# ---------------------------------------------------------------------------- leftovers


_OWNER = """
import sys, time
from pathlib import Path
from calm_rag.pipeline.cache import StageCache
from calm_rag.pipeline.run_folder import new_run_folder

root, runs = Path(sys.argv[1]), Path(sys.argv[2])
cache = StageCache(root)
work = cache.work_folder("sample", "empty")  # claimed, nothing finished yet
shards = cache.work_folder("sample", "resumable")
(shards / "shard-00000.jsonl").write_text("{}\\n")
with cache.writing("align", "k1") as staging, new_run_folder(runs) as (folder, _):
    (staging / "adapter.bin").write_bytes(b"half")
    (folder / "config.yaml").write_text("half")
    print("ready", flush=True)
    time.sleep(600)
"""


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_a_killed_runs_staging_is_swept_at_the_next_start_whatever_its_age(tmp_path):
    from calm_rag.pipeline.cache import StageCache, sweep_folder

    root, runs = tmp_path / "cache", tmp_path / "runs" / "tiny"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(root), str(runs)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "ready\n"
        StageCache(root)  # the owner lives: nothing of its is touched
        assert sweep_folder(runs) == []
        align, sample = _entries(root / "align"), _entries(root / "sample")
        assert len(align) == 1 and align[0].startswith(".k1.") and align[0].endswith(".new")
        assert sample == ["empty.partial", "resumable.partial"]
        assert [n.startswith(f".run.pid-{owner.pid}-") for n in _entries(runs)] == [True]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    StageCache(root)  # the next start: seconds old, but the owner is gone
    assert _entries(root / "align") == []
    # A killed run's finished shards are its progress: kept for the rerun to resume from.
    assert _entries(root / "sample") == ["resumable.partial"]
    assert [p.name for p in sweep_folder(runs)][0].startswith(f".run.pid-{owner.pid}-")
    assert _entries(runs) == []


def test_a_staging_folder_of_another_machine_waits_for_its_age(tmp_path):
    from calm_rag.pipeline.cache import sweep_folder

    other = tmp_path / ".run.pid-1-elsewhere_1.abc.new"  # pid 1 there may be anything
    other.mkdir()
    assert sweep_folder(tmp_path) == [] and other.exists()
    then = time.time() - 2 * 24 * 3600
    os.utime(other, (then, then))
    assert sweep_folder(tmp_path) == [other] and not other.exists()


@pytest.mark.slow  # trains the tiny model twice (about half a minute on 2 cores)
def test_kill_9_in_the_align_stage_then_a_rerun_leaves_no_staging(sharp_model, tmp_path):
    data = experiment(sharp_model, tmp_path / "runs", align__epochs=3, data__train=8)
    path = write_experiment(tmp_path, data)
    align = tmp_path / "runs" / ".cache" / "align"
    proc = subprocess.Popen([sys.executable, "-m", "calm_rag.cli", "run", str(path), "--quiet"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(align.glob(".*.new")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the align stage never started writing"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    assert list(align.glob(".*.new"))  # the killed training's staging folder
    assert run_cli(path) == 0
    left = [p for p in (tmp_path / "runs").rglob("*")
            if p.name.endswith((".new", ".partial", ".tmp"))]
    assert left == []


@pytest.mark.parametrize("name", ["a" * 256, "é" * 128])
def test_a_run_name_longer_than_the_file_system_allows_is_refused(name, tmp_path):
    from calm_rag.pipeline.run_folder import check_run_name

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(InputError) as err:
        check_run_name(name, tmp_path)
    assert str(err.value) == (f"field 'name': is 256 bytes long; the file system of the runs "
                              f"folder allows folder names of at most {limit} bytes "
                              "(a shorter name)")
    assert check_run_name("a" * limit, tmp_path) == "a" * limit


# ---------------------------------------------------------------------------- align.trainer


@pytest.mark.parametrize(("trainer", "message"), [
    ({"warmup_steps": "ten"},
     "field 'align.trainer.warmup_steps': TRL's DPOConfig takes a number, got 'ten'"),
    ({"lr_scheduler_type": "zigzag"},
     "field 'align.trainer.lr_scheduler_type': is not a choice of TRL's DPOConfig, got 'zigzag' "
     "(use one of linear, cosine,"),
    ({"max_steps": 2.5}, "TRL's DPOConfig takes a whole number, got 2.5"),
    ({"tf32": "sometimes"}, "TRL's DPOConfig takes true or false or null, got 'sometimes'"),
    ({"label_names": [1, 2]}, "TRL's DPOConfig takes a list of strings or null, got [1, 2]"),
    ({"loss_weights": ["heavy"]}, "takes a list of numbers or null, got ['heavy']"),
    ({"debug": "underflow_overflow nope"}, "is not a choice of TRL's DPOConfig, got "
     "'underflow_overflow nope' (use one of underflow_overflow, tpu_metrics_debug)"),
    ({"log_level": "loud"}, "(use one of detail, debug, info, warning, error, critical, passive)"),
    ({"include_num_input_tokens_seen": "sometimes"}, "(use one of all, non_padding, no)"),
    ({"pad_to_multiple_of": "sixteen"}, "got 'sixteen' (use one of auto)"),
    ({"parallelism_config": {"tp_size": 2}},
     "takes a ParallelismConfig object (not a YAML value) or null"),
    ({"logging_strategy": 3}, "takes one of no, steps, epoch, got 3"),
])
def test_trainer_values_are_checked_by_trls_field_types(trainer, message, tmp_path):
    with pytest.raises(InputError) as err:
        _load(tmp_path, {"name": "x", "align": {"trainer": trainer}})
    assert message in str(err.value)
    assert err.value.line == 4  # the key under align.trainer


@pytest.mark.parametrize("trainer", [
    {"lr_scheduler_type": "cosine", "warmup_steps": 3},
    {"warmup_steps": 0.1, "weight_decay": 0, "max_grad_norm": 1},
    {"loss_type": "sigmoid"}, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1, 0.5]},
    {"debug": "underflow_overflow tpu_metrics_debug"}, {"include_num_input_tokens_seen": True},
    {"pad_to_multiple_of": "auto"}, {"pad_to_multiple_of": 8}, {"optim": "adamw_torch"},
    {"gradient_checkpointing_kwargs": {"use_reentrant": False}}, {"max_steps": 5},
])
def test_valid_trainer_values_load(trainer, tmp_path):
    _load(tmp_path, {"name": "x", "align": {"trainer": trainer}})


@pytest.mark.parametrize("config", ["DPOConfig", "SFTConfig"])
def test_every_trl_default_passes_its_own_check(config):
    """A property over every field TRL declares: its own default is a valid value."""
    import trl

    from calm_rag.training.config import OWNED, TRL_STRINGS, trl_value_check

    cls = getattr(trl, config)
    hints = typing.get_type_hints(cls)
    checked = 0
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if f.name in OWNED:
            continue
        trl_value_check(f.name, default, hints[f.name],
                        f.metadata.get("choices", TRL_STRINGS.get(f.name)), config)
        checked += 1
    assert checked > 100


def test_a_tracker_that_is_not_installed_is_refused_at_load(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(InputError) as err:
        _load(tmp_path, {"name": "x", "align": {"report_to": ["wandb"]}})
    assert str(err.value) == (f"{tmp_path / 'exp.yaml'}:3: field 'align.report_to': 'wandb' "
                              "needs the wandb package, which is not installed "
                              "(pip install wandb, or report_to: none)")


def test_regenerate_tries_has_an_upper_bound_with_its_reason(tmp_path):
    with pytest.raises(InputError) as err:
        _load(tmp_path, {"name": "x", "vote": {"chosen_fallback": "regenerate",
                                               "regenerate_tries": 100_000_000}})
    assert str(err.value) == (
        f"{tmp_path / 'exp.yaml'}:4: field 'vote.regenerate_tries': must be at most 256, got "
        "100000000: a language's tries are sampled in one call, so the generator holds them "
        "all in memory at once (e.g. 4 (the default) to 16)")
    _load(tmp_path, {"name": "x", "vote": {"chosen_fallback": "regenerate",
                                           "regenerate_tries": 256}})


# ---------------------------------------------------------------------------- devices, counts


def _message(tmp_path: Path, data: dict) -> str:
    with pytest.raises(InputError) as err:
        _load(tmp_path, data)
    return str(err.value)


def test_parallel_sizes_are_checked_against_the_devices_here(tmp_path, monkeypatch):
    from calm_rag.runtime import hardware

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(hardware, "gpu_count", lambda: 0)
    monkeypatch.setattr(hardware, "numa_nodes", lambda: 1)
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    where = f"{tmp_path / 'exp.yaml'}:4: field 'generator.options."
    assert _message(tmp_path, {"name": "x", "generator": {"options": {
        "tensor_parallel_size": 4}}}) == (
        f"{where}tensor_parallel_size': 4 workers of one engine need 4 NUMA nodes on a CPU (no "
        "GPU is visible), this machine has 1 (vLLM-CPU binds each tensor/pipeline-parallel "
        "worker to a NUMA node of its own: use 1, or data_parallel_size to share the cores "
        "among engines)")
    assert _message(tmp_path, {"name": "x", "generator": {"options": {
        "data_parallel_size": 3}}}) == (
        f"{where}data_parallel_size': 3 engines on 2 cores (no GPU is visible) (each engine "
        "needs a core of its own: use at most as many)")
    _load(tmp_path, {"name": "x", "generator": {"options": {"data_parallel_size": 2}}})
    monkeypatch.setattr(hardware, "gpu_count", lambda: 2)
    assert _message(tmp_path, {"name": "x", "generator": {"options": {
        "tensor_parallel_size": 2, "data_parallel_size": 2}}}) == (
        f"{where.replace(':4:', ':5:')}data_parallel_size': 2 engine(s) of 2 GPUs need 4 "
        "GPUs, 2 are visible (lower the parallel sizes, or set ray_address to use a "
        "cluster's GPUs)")
    _load(tmp_path, {"name": "x", "generator": {"options": {"tensor_parallel_size": 2}}})
    _load(tmp_path, {"name": "x", "generator": {"options": {  # a cluster's devices: unknown
        "tensor_parallel_size": 8, "ray_address": "auto"}}})


def test_numa_nodes_and_visible_gpus_are_read_from_the_machine(tmp_path, monkeypatch):
    from calm_rag.runtime.hardware import gpu_count, numa_nodes

    for name in ("node0", "node1", "possible"):
        (tmp_path / name).mkdir()
    assert numa_nodes(tmp_path) == 2
    assert numa_nodes(tmp_path / "absent") == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 3")
    assert gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_count() == 0


@pytest.mark.parametrize(("data", "line", "message"), [
    ({"sampling": {"n": 1025}}, 3, "field 'sampling.n': must be at most 1024, got 1025: a "
     "prompt's n responses are generated, held and voted on together; CALM samples a few per "
     "language"),
    ({"evaluation": {"sampling": {"max_tokens": 10**6}}}, 4, "field 'evaluation.sampling."
     "max_tokens': must be at most 131072, got 1000000: longer than the context of the models "
     "calm_rag samples; a response is an explanation and one letter"),
    ({"shard_questions": 2**60}, 2, "field 'shard_questions': must lie within ±2^53, got "
     "1152921504606846976: no count or size means anything past it, and JSON records hold "
     "whole numbers exactly only up to it"),
])
def test_every_count_has_an_upper_bound_with_its_reason(tmp_path, data, line, message):
    assert _message(tmp_path, {"name": "x", **data}) == f"{tmp_path / 'exp.yaml'}:{line}: {message}"


def test_a_language_the_set_lacks_is_named_by_its_full_key_and_line(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\ndata:\n  languages: [en, zh-Hant-TW]\n", encoding="utf-8")
    assert main(["run", "--check", str(exp)]) == 2
    assert capsys.readouterr().err == (
        f"calm-rag run: error: {exp}:3: field 'data.languages': bundled has no zh-hant "
        "questions (it has en, zh, fr, de, it, ja)\n")
    assert _message(tmp_path, {"name": "x", "data": {"source": "medqa-gbaker",
                                                     "languages": ["en", "fr"]}}) == (
        f"{exp}:4: field 'data.languages': medqa-gbaker has no fr questions (it has en)")


# ---------------------------------------------------------------------------- indexes


MISSING_INDEX = ("field 'retrieval.index': no built index named 'gone' in indexes, nor a spec to "
                 "build it from (write indexes/gone.yaml, here or beside the experiment, and "
                 "build it with calm-rag index build, or name a built index)")


def test_check_names_a_missing_index_by_its_key_and_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no indexes/ here nor above the experiment
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\nretrieval:\n  enabled: true\n  index: gone\n", encoding="utf-8")
    assert main(["run", "--check", str(exp)]) == 2
    assert capsys.readouterr().err == f"calm-rag run: error: {exp}:4: {MISSING_INDEX}\n"
    assert main(["run", "--check", str(exp), "--set", "retrieval.index=gone"]) == 2
    assert capsys.readouterr().err == (
        f"calm-rag run: error: --set retrieval.index=gone: {MISSING_INDEX}\n")
    assert main(["run", "--check", str(exp), "--no-retrieval"]) == 0  # no index asked for
    capsys.readouterr()
    spec = tmp_path / "indexes" / "gone.yaml"  # a spec the run builds the index from
    spec.parent.mkdir()
    spec.write_text("name: gone\ncorpus: []\n", encoding="utf-8")
    assert main(["run", "--check", str(exp)]) == 2  # the spec a run would build from is read
    assert capsys.readouterr().err == (f"calm-rag run: error: {spec}:2: field 'corpus': "
                                       "lists no corpus\n")
    spec.write_text("name: gone\ncorpus: [{type: jsonl, path: c.jsonl}]\n", encoding="utf-8")
    assert main(["run", "--check", str(exp)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"retrieval.index gone: {spec}"


def test_a_run_names_a_missing_index_by_its_key_before_any_model(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\ndata: {languages: [en], train: 1, heldout: 0}\n"
                   "retrieval: {enabled: true, index: gone}\n", encoding="utf-8")
    assert main(["run", str(exp), "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"calm-rag run: error: {MISSING_INDEX}"
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- combinations


def test_combinations_that_cannot_run_together_are_refused_at_load(tmp_path):
    exp = tmp_path / "exp.yaml"
    assert _message(tmp_path, {"name": "x", "data": {"languages": ["en", "fr", "de"],
                                                     "language_sets": [["en", "fr"],
                                                                       ["fr", "en"]]}}) == (
        f"{exp}:10: field 'data.language_sets[1]': lists a set twice: [fr, en] is "
        "language_sets[0] in another order (name each set of languages once)")
    assert _message(tmp_path, {"name": "x", "data": {"languages": ["en", "fr", "de"]},
                               "evaluation": {"heldout_languages": ["de", "fr"]}}) == (
        f"{exp}:8: field 'evaluation.heldout_languages': data.languages has only en left to "
        "train on (the vote needs two languages or more that are not held out: hold out fewer "
        "languages)")
    assert _message(tmp_path, {"name": "x", "generator": {"backend": "hf"},
                               "sampling": {"forced_answer": True}}) == (
        f"{exp}:5: field 'sampling.forced_answer': the hf backend cannot force answers (use "
        "generator.backend: vllm, or set forced_answer: false)")
    assert _message(tmp_path, {"name": "x", "retrieval": {"fusion": {"rrf_k": 10}}}) == (
        f"{exp}:4: field 'retrieval.fusion.rrf_k': only rrf reads it, combine is zscore (set "
        "combine: rrf, or leave rrf_k out)")
    _load(tmp_path, {"name": "x", "retrieval": {"fusion": {"combine": "rrf", "rrf_k": 10}}})


@pytest.mark.parametrize(("answers", "flags", "line"), [
    ({"en": ["A", "B"]}, [], "field '--min-languages': asks for votes of 2 languages or more, "
     "the samples hold 1 language (en) (study samples of more languages, or lower "
     "--min-languages)"),
    ({"en": ["A"], "fr": ["B"]}, ["--min-languages", "3"], "field '--min-languages': asks for "
     "votes of 3 languages or more, the samples hold 2 languages (en, fr) (study samples of "
     "more languages, or lower --min-languages)"),
])
def test_study_votes_with_nothing_to_study_says_why(tmp_path, capsys, answers, flags, line):
    from calm_rag.datasets.samples import write_samples
    from tests.helpers import make_samples

    path = tmp_path / "samples.jsonl"
    write_samples(path, make_samples(answers, gold="A"))
    assert main(["study", "votes", str(path), *flags]) == 2
    assert capsys.readouterr().err == f"calm-rag study: error: {line}\n"
