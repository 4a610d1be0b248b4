"""The offline home: prepare_once (lock, re-check, staging, stamp), model references checked
before anything loads, and a hub that cannot be reached failing at once with one line."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.io import exclusive_lock
from calm_rag.models import check_model_reference, looks_like_hub_id, prepare_once
from calm_rag.models.home import STAMP_FILE, lock_path, read_stamp
from calm_rag.models.references import check_hub_available, from_local_or_hub

EXPECTED = {"source": "weights.gguf", "size": 123, "converter": 1}


def builder(calls: list[Path]):
    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "config.json").write_text("{}")
    return build


# --------------------------------------------------------------------------- prepare_once


def test_prepare_once_builds_stamps_and_reuses(tmp_path):
    target = tmp_path / "models" / "m"
    calls: list[Path] = []
    assert prepare_once(target, EXPECTED, builder(calls)) == target
    assert len(calls) == 1 and calls[0] != target  # built in a staging folder, then renamed
    assert (target / "config.json").is_file()
    stamp = read_stamp(target)
    assert {k: stamp[k] for k in EXPECTED} == EXPECTED and "seconds" in stamp
    prepare_once(target, EXPECTED, builder(calls))
    assert len(calls) == 1  # up to date: nothing built
    prepare_once(target, {**EXPECTED, "converter": 2}, builder(calls))
    assert len(calls) == 2  # another converter: built again
    prepare_once(target, {**EXPECTED, "converter": 2}, builder(calls), force=True)
    assert len(calls) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == [".m.lock", "m"]


def test_prepare_once_rechecks_after_waiting_for_the_lock(tmp_path):
    """Another process finished the folder while this one waited: it is not built twice."""
    target = tmp_path / "m"
    calls: list[Path] = []
    result: list[Path] = []
    with exclusive_lock(lock_path(target)):
        waiter = threading.Thread(
            target=lambda: result.append(prepare_once(target, EXPECTED, builder(calls))))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and not calls  # blocked on the lock
        # The "other process" builds the folder, stamped, while holding the lock.
        target.mkdir()
        (target / STAMP_FILE).write_text('{"source": "weights.gguf", "size": 123, '
                                         '"converter": 1}')
    waiter.join(timeout=10)
    assert result == [target] and calls == []


def test_a_failed_build_leaves_no_folder_and_sweeps_killed_staging(tmp_path):
    target = tmp_path / "m"
    killed = tmp_path / ".m.abc123.new"  # a staging folder of a killed preparation
    killed.mkdir()

    def broken(staging: Path) -> None:
        (staging / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        prepare_once(target, EXPECTED, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock"]


def test_an_unstamped_folder_is_prepared_again(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "config.json").write_text("{}")  # e.g. copied by hand, no stamp
    calls: list[Path] = []
    prepare_once(target, EXPECTED, builder(calls))
    assert len(calls) == 1 and read_stamp(target) is not None


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "intfloat/e5.small",
                                  "smollm2-135m-instruct", "multilingual-e5-small"])
def test_hub_ids_and_defaults_pass(name):
    check_model_reference(name)


@pytest.mark.parametrize(("name", "message"), [
    ("gpt2-nonexistent", "neither a local folder nor a hub id"),
    ("a/b/c", "neither a local folder nor a hub id"),
    ("owner/na--me", "neither a local folder nor a hub id"),
    ("owner/name!", "neither a local folder nor a hub id"),
    ("./models/mine", "no such model folder"),
    ("../mine", "no such model folder"),
    ("/no/such/folder", "no such model folder"),
    ("", "empty"),
])
def test_names_that_cannot_be_a_model_fail_at_once(name, message):
    with pytest.raises(InputError, match=message) as err:
        check_model_reference(name, field="generator.model")
    assert "\n" not in str(err.value) and "generator.model" in str(err.value)


def test_files_and_empty_or_foreign_folders_are_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(InputError, match="is a file, not a model folder"):
        check_model_reference(str(weights))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="is empty"):
        check_model_reference(str(empty))
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "README.md").write_text("hi")
    with pytest.raises(InputError, match="no config.json"):
        check_model_reference(str(foreign))
    (foreign / "config.json").write_text("{}")
    check_model_reference(str(foreign))


def test_a_default_name_is_only_a_default_where_asked():
    with pytest.raises(InputError):
        check_model_reference("multilingual-e5-small", defaults=("smollm2-135m-instruct",))


def test_hub_id_shape():
    assert looks_like_hub_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert not looks_like_hub_id("Qwen/Qwen2.5-0.5B-Instruct/")
    assert not looks_like_hub_id("-owner/name")
    assert not looks_like_hub_id("owner/" + "n" * 100)


def test_checking_imports_no_torch():
    code = ("import sys; from calm_rag.models import check_model_reference as c; "
            "c('owner/name'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the hub, offline


def test_an_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []

    def load(name, **kwargs):
        calls.append(kwargs)
        raise OSError("not in the cache")

    with pytest.raises(InputError, match="neither a local folder nor reachable on the hub") as err:
        from_local_or_hub("someone/some-model", load)
    assert calls == [{"local_files_only": True}]  # the cache only: the hub was never asked
    assert "huggingface-cli download someone/some-model" in err.value.hint


def test_a_cached_hub_model_loads_without_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert from_local_or_hub("someone/cached", lambda name, **kw: (name, kw)) == (
        "someone/cached", {"local_files_only": True})


def test_the_loader_turns_transformers_errors_into_one_line(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from calm_rag.models import load_causal_lm

    # A closed local port stands for a network with no hub on it.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(InputError, match="neither a local folder nor reachable on the hub"):
        load_causal_lm("someone-calm-rag-test/not-a-cached-model")
    assert time.perf_counter() - started < 20
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(InputError, match="cannot load the model") as err:
        load_causal_lm(str(broken))
    assert "\n" not in str(err.value)


def test_an_embedder_on_an_unreachable_hub_is_one_line(monkeypatch, tmp_path):
    pytest.importorskip("sentence_transformers")
    from calm_rag.retrieval.embedder import Embedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="field 'embedder.model': the model someone/not-cached "
                                         "is neither a local folder nor reachable"):
        Embedder.load("someone/not-cached")
    with pytest.raises(InputError, match="field 'embedder.model': .*is empty"):
        Embedder.load(str(tmp_path))


def test_a_hub_id_in_the_local_hub_cache_needs_no_network(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError) as err:
        check_hub_available("someone/m", field="generator.model")
    assert err.value.field == "generator.model"
    assert err.value.message == ("the model someone/m is neither a local folder nor reachable "
                                 "on the hub (no network)")
    snapshot = tmp_path / "models--someone--m" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    check_hub_available("someone/m")  # downloaded before: loads from the cache offline


def test_a_hub_generator_offline_fails_before_the_run_opens_any_entry(monkeypatch, tmp_path,
                                                                     capsys):
    """Issue 26: the failure left an empty ``.partial`` sample entry (and its lock) behind."""
    import huggingface_hub.constants

    from calm_rag.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\ndata: {languages: [en], train: 1, heldout: 0}\n"
                   "generator: {backend: hf, model: someone-calm-rag-test/no-such-model}\n"
                   f"retrieval: {{enabled: false}}\nruns_dir: {tmp_path / 'runs'}\n")
    assert main(["run", str(exp), "--quiet"]) == 2
    err = capsys.readouterr().err  # the run's progress lines come first, then one error line
    assert err.count("error:") == 1 and err.splitlines()[-1] == (
        "calm-rag run: error: field 'generator.model': the model "
        "someone-calm-rag-test/no-such-model is neither a local folder nor reachable on the hub "
        "(no network) (where there is network, run `huggingface-cli download "
        "someone-calm-rag-test/no-such-model --local-dir DIR` and set the model to DIR)")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exp.yaml"]
