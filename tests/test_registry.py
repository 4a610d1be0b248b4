"""One registry module: a new dataset, tie policy and metric, each in one plugin file, used by
name from an experiment's YAML through the real pipeline (tiny model, hf backend)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from calm_rag.registries import ALL, METRICS, TIE_POLICIES
from calm_rag.registry import Registry, RegistryError

PLUGIN = '''
"""A plugin: one dataset, one tie policy and one metric, registered by name."""

from calm_rag.records import Question
from calm_rag.registries import METRICS, QUESTION_SOURCES, TIE_POLICIES

TIES = []  # the tie policy's calls, for the test to see

STEMS = {"en": "Which number is {n} plus one?", "fr": "Quel nombre vient après {n} ?"}


@QUESTION_SOURCES.register("toy-counting")
def toy_counting(data, base_dir):
    return [Question(id=f"toy-{n}", lang=lang, stem=STEMS[lang].format(n=n),
                     options={"A": str(n + 1), "B": str(n + 2), "C": str(n), "D": str(n - 1)},
                     answer="A", source="toy")
            for lang in data.languages for n in range(8)]


@TIE_POLICIES.register("last-seen")
def last_seen(tied, samples, config):
    TIES.append(sorted(tied))
    return [s.answer for s in samples if s.answer in tied][-1]


@METRICS.register("answered_languages")
def answered_languages(rows, langs):
    """Questions answered in every language."""
    return sum(all(r["answers"].get(lang) for lang in langs) for r in rows)
'''



@pytest.fixture(autouse=True)
def registries_as_they_were():
    """A plugin registers into the process's registries: later tests (``--describe`` lists
    every name) must not see it."""
    before = {kind: set(registry.names()) for kind, registry in ALL.items()}
    yield
    for kind, registry in ALL.items():
        for name in set(registry.names()) - before[kind]:
            registry.unregister(name)


def test_plugin_parts_run_by_name_from_yaml(sharp_model, tmp_path):
    (tmp_path / "toy_plugin.py").write_text(PLUGIN, encoding="utf-8")
    experiment = {
        "name": "plugged", "plugins": ["toy_plugin.py"],
        "data": {"source": "toy-counting", "languages": ["en", "fr"], "train": 4, "heldout": 2},
        "generator": {"backend": "hf", "model": str(sharp_model),
                      "options": {"batch_size": 4, "threads": 1}},
        "sampling": {"n": 1, "temperature": 1.0, "max_tokens": 8, "seed": 3},
        "retrieval": {"enabled": False},
        "vote": {"tie": "last-seen", "chosen_fallback": "pivot"},
        "align": {"rounds": 1, "epochs": 1, "batch_size": 4, "max_length": 256,
                  "threads": 1},
        "evaluation": {"sampling": {"n": 1, "temperature": 0.0, "max_tokens": 8},
                       "metrics": ["answered_languages"]},
        "shard_questions": 2, "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    assert main(["run", str(path), "--quiet"]) == 0

    plugin = next(m for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) == str((tmp_path / "toy_plugin.py").resolve()))
    run = tmp_path / "runs" / "plugged"
    run = run / (run / "LATEST").read_text().strip()
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["question"]["id"] for s in samples} <= {f"toy-{n}" for n in range(8)}
    votes = [json.loads(line) for line in (run / "votes.jsonl").read_text().splitlines()]
    broken = [v for v in votes if v["status"] == "tie-broken"]
    assert broken and len(plugin.TIES) == len(broken)  # every tie went to the plugin's policy
    grid = json.loads((run / "metrics.json").read_text())
    for cell in grid["cells"].values():
        metrics = cell["metrics"]["zero-shot"]
        assert 0 <= metrics["answered_languages"] <= metrics["n_questions"]
    # The resolved config names the plugin by its absolute file and reads back.
    assert load_experiment(run / "config.yaml").vote.tie == "last-seen"


def test_unknown_names_list_the_registered_ones(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nvote:\n  tie: coin-flip\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_experiment(path)
    assert err.value.field == "vote.tie" and err.value.line == 3
    assert "unknown tie policy 'coin-flip'" in str(err.value)
    assert all(name in err.value.hint for name in ("drop", "first-seen", "pivot"))
    path.write_text("name: x\nplugins: [no_such_plugin_module]\n", encoding="utf-8")
    with pytest.raises(InputError, match="exp.yaml:2: field 'plugins\\[0\\]': cannot import"):
        load_experiment(path)


def test_registry_refuses_a_taken_name_and_a_wrong_shape():
    registry: Registry = Registry("widget", arity=2)
    registry.register("one", lambda a, b: a)
    with pytest.raises(RegistryError, match="widget named 'one' is already registered"):
        registry.register("one", lambda a, b: b)
    with pytest.raises(RegistryError, match="2 positional arguments"):
        registry.register("two", lambda a: a)
    classes: Registry = Registry("base-checked", base=Exception)
    with pytest.raises(RegistryError, match="must be a Exception"):
        classes.register("str", str)
    with pytest.raises(InputError, match="unknown widget 'three'") as err:
        registry.get("three", field="widgets.x")
    assert err.value.field == "widgets.x" and err.value.hint == "use one of one"
    assert not issubclass(RegistryError, InputError)


def test_every_kind_is_declared_once_and_listed_by_describe(capsys):
    kinds = {"sampler backend", "extractor", "extractor chain", "tie policy", "vote policy",
             "vote preset", "chosen fallback", "dataset", "corpus type", "retrieval policy",
             "align method", "metric"}
    assert kinds == set(ALL)
    assert main(["run", "--describe"]) == 0
    out = capsys.readouterr().out
    for kind, registry in ALL.items():
        assert f"  {kind}: {', '.join(registry)}" in out
    assert "first-seen" in TIE_POLICIES and "consistency" in METRICS
