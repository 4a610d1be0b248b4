"""Parts added as plugins, each in one file written by the test and named in the experiment's
``plugins:`` key, run through the real CLI on the tiny model: nothing outside the plugin file
and the registry knows their names."""

from __future__ import annotations

import json
import os

import pytest

from calm_rag.cli import main
from calm_rag.experiment import describe, load_experiment
from calm_rag.registries import ALL
from calm_rag.vote.voting import tally
from tests.helpers import experiment, latest_run, make_samples, run_cli, write_experiment

load_file = pytest.importorskip("safetensors.torch").load_file
pytest.importorskip("trl")


# --------------------------------------------------------------------------- align method (h8)

CHOSEN_SFT = '''"""chosen-sft: supervised fine-tuning on each preference pair's chosen response."""

from calm_rag.registries import ALIGN_METHODS
from calm_rag.sampling.chat import recorded_chat
from calm_rag.training.common import run_training, with_template_kwargs
from calm_rag.training.methods import AlignMethod
from calm_rag.training.sft import sft_trainer


@ALIGN_METHODS.register("chosen-sft")
class ChosenSFT(AlignMethod):
    trl_config = "SFTConfig"  # align.trainer keys are checked against it

    @classmethod
    def rows(cls, samples, votes, pairs):
        return list(pairs)

    @classmethod
    def train(cls, model_path, rows, config, out_dir, adapter=None):
        trl_rows = [with_template_kwargs({
            "prompt": recorded_chat(p.instruction, p.input, what=f"pair {p.chosen_sample_id}",
                                    hint="sample again"),
            "completion": [{"role": "assistant", "content": p.chosen}]}, config)
            for p in rows]
        return run_training("chosen-sft", model_path, trl_rows, config, out_dir,
                            sft_trainer(config, trl_rows), adapter)
'''


def test_a_plugin_align_method_runs_an_experiment(sharp_model, tmp_path, capsys):
    """An align method in one plugin file, chosen by name, trains in a real run (TRL's SFT
    trainer on each pair's chosen response); its own name and rows are in the run."""
    before = {kind: set(registry.names()) for kind, registry in ALL.items()}
    (tmp_path / "chosen_sft.py").write_text(CHOSEN_SFT, encoding="utf-8")
    # max_length: room for the longest prompt (the tiny tokenizer's tokens are short), so
    # that no row is dropped and every pair is one row trained on.
    data = experiment(sharp_model, tmp_path / "runs", plugins=["chosen_sft.py"],
                      align__method="chosen-sft", align__max_length=1024)
    try:
        assert run_cli(write_experiment(tmp_path, data)) == 0
        # The method's capabilities are asked, not its name: its ranks could not rebuild it.
        launched = data | {"plugins": [str(tmp_path / "chosen_sft.py")],
                           "align": data["align"] | {"launcher": "accelerate"}}
        capsys.readouterr()
        assert run_cli(write_experiment(tmp_path / "launched", launched)) == 2
        said = capsys.readouterr().err
        assert "field 'align.launcher': method 'chosen-sft' cannot run under a launcher" in said
    finally:
        for kind, registry in ALL.items():
            for name in set(registry.names()) - before[kind]:
                registry.unregister(name)

    run = latest_run(tmp_path / "runs")
    pairs = (run / "pairs.jsonl").read_text().splitlines()
    stage = next(s for s in json.loads((run / "manifest.json").read_text())["stages"]
                 if s["stage"] == "align")
    trained = json.loads((tmp_path / "runs" / ".cache" / "align" / stage["key"]
                          / "train_log.json").read_text())
    assert trained["method"] == "chosen-sft" and trained["config"]["method"] == "chosen-sft"
    assert pairs and trained["rows"] == len(pairs)  # one row per pair, none dropped
    assert trained["steps"] and not any("rewards/margins" in s for s in trained["steps"])
    # PEFT starts every lora_B at zero: each one moved, so the after-model is another model.
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(float(w.abs().max()) > 0 for w in lora_b)
    report = (run / "report.md").read_text()
    assert "chosen-sft, target majority, 1 round(s)" in report
    assert "+ adapter " in next(line for line in report.splitlines() if "aligned model" in line)


# --------------------------------------------------------------------------- sampler backend (h7)

TAGGED_BACKEND = '''"""tagged: the hf sampler on a local model, each text tagged and each call
logged; it loads no adapter, so the pipeline gives it a merged model after training."""

import json
from dataclasses import dataclass
from pathlib import Path

from calm_rag.registries import SAMPLERS
from calm_rag.sampling import HFOptions, HFSampler, Sampler

CALLS = Path(__file__).with_name("calls.jsonl")
TAG = "<tagged> "


@dataclass(frozen=True)
class TaggedOptions:
    threads: int = 1


@SAMPLERS.register("tagged")
class TaggedSampler(Sampler):
    Options = TaggedOptions
    loads_adapters = False
    reads_local_weights = True

    def __init__(self, model=None, options=None):
        super().__init__(model, options)
        self.inner = HFSampler(self.model_name, HFOptions(threads=self.options.threads,
                                                          dtype="float32", progress=False))

    def generate(self, prompts, params):
        with CALLS.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"model": self.model_name, "prompts": len(prompts),
                                  "n": params.n}) + "\\n")
        return [[TAG + text for text in texts]
                for texts in self.inner.generate(prompts, params)]
'''


def test_a_plugin_backend_runs_an_experiment(sharp_model, tmp_path):
    """A sampler backend in one plugin file, chosen by name, samples a whole run: the base
    model before training and, since it says it loads no adapter, the merged model after."""
    before = {kind: set(registry.names()) for kind, registry in ALL.items()}
    (tmp_path / "tagged_backend.py").write_text(TAGGED_BACKEND, encoding="utf-8")
    data = experiment(sharp_model, tmp_path / "runs", plugins=["tagged_backend.py"],
                      generator={"backend": "tagged", "model": str(sharp_model),
                                 "options": {"threads": 1}})
    try:
        assert run_cli(write_experiment(tmp_path, data)) == 0
    finally:
        for kind, registry in ALL.items():
            for name in set(registry.names()) - before[kind]:
                registry.unregister(name)

    run = latest_run(tmp_path / "runs")
    stage = next(s for s in json.loads((run / "manifest.json").read_text())["stages"]
                 if s["stage"] == "align")
    merged = tmp_path / "runs" / ".cache" / "align" / stage["key"] / "merged"
    assert (merged / "config.json").is_file()  # align.merge was switched on for it
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    asked: dict[tuple[str, int], int] = {}
    for call in calls:
        key = (call["model"], call["n"])
        asked[key] = asked.get(key, 0) + call["prompts"]
    # 4 train questions x 2 languages sampled n=3 to vote; 6 questions x 2 languages
    # evaluated greedily before (the base) and after (the merged model).
    assert asked == {(str(sharp_model), 3): 8, (str(sharp_model), 1): 12,
                     (str(merged), 1): 12}
    texts = [json.loads(line)["text"] for name in ("samples.jsonl", "eval/heldout-after.jsonl")
             for line in (run / name).read_text().splitlines()]
    assert len(texts) == 24 + 4 and all(t.startswith("<tagged> ") for t in texts)
    # report.md names it relative to the run folder (no machine path in a shared report)
    shown = os.path.relpath(merged, run.resolve())
    assert f"- **aligned model**: {shown}\n" in (run / "report.md").read_text()


# --------------------------------------------------------------------------- vote policy

ONE_LANGUAGE = '''"""one-language: one language's parsed answers vote (its option says which)."""

from collections import Counter
from dataclasses import dataclass

from calm_rag.registries import VOTE_POLICIES
from calm_rag.vote.options import VotePolicy
from calm_rag.vote.voting import PolicyResult


@dataclass(frozen=True)
class OneLanguageOptions:
    """Options of the one-language policy."""

    lang: str = "en"
    """The language whose answers vote."""


def one_language(questions, config):
    return PolicyResult([dict(Counter(s.answer for s in q
                                      if s.answer and s.lang == config.options.lang))
                         for q in questions])


VOTE_POLICIES.register("one-language", VotePolicy(one_language, OneLanguageOptions))
'''


def test_a_plugin_vote_policy_takes_typed_options(tmp_path, capsys):
    """A vote policy in one plugin file declares its options as a dataclass: the experiment
    chooses it and its options by name, the loader checks them, ``--describe`` lists them."""
    before = {kind: set(registry.names()) for kind, registry in ALL.items()}
    (tmp_path / "one_language.py").write_text(ONE_LANGUAGE, encoding="utf-8")
    path = tmp_path / "exp.yaml"
    head = "name: t\nruns_dir: runs\nplugins: [one_language.py]\nvote:\n  policy: one-language\n"
    try:
        path.write_text(head + "  options: {lang: fr}\n", encoding="utf-8")
        config = load_experiment(path).vote
        assert type(config.options).__name__ == "OneLanguageOptions"
        assert config.options.lang == "fr"
        samples = make_samples({"en": ["A", "A", "A"], "fr": ["B"]})
        votes = tally(samples, config).votes
        assert [(v.answer, v.status) for v in votes] == [("B", "majority")]
        assert any(line.startswith("vote.options.lang (str, default 'en'): The language")
                   for line in describe())
        path.write_text(head + "  options: {langs: fr}\n", encoding="utf-8")
        assert main(["run", str(path), "--quiet"]) == 2
        said = capsys.readouterr().err.strip()
        assert len(said.splitlines()) == 1 and f"{path}:6" in said
        assert "field 'vote.options.langs': unknown option of policy 'one-language' " \
               "(did you mean lang?)" in said
    finally:
        for kind, registry in ALL.items():
            for name in set(registry.names()) - before[kind]:
                registry.unregister(name)
