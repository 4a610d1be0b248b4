"""Align methods as an experiment axis (``align.methods: [dpo, dco]``): the keys checked at
load, and one real grid on the tiny model (hf backend, no retrieval) whose methods share the
samples and the votes."""

from __future__ import annotations

import json

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from calm_rag.pipeline import run_experiment
from calm_rag.pipeline.method_grid import method_experiment
from tests.helpers import experiment, make_samples, write_experiment


def _load(tmp_path, model, **changes):
    return load_experiment(write_experiment(tmp_path, experiment(model, tmp_path / "runs",
                                                                 **changes)))


def test_method_grid_keys_are_checked(tmp_path, tiny_model):
    exp = _load(tmp_path, tiny_model, align__methods=["dpo", "dco"])
    assert exp.align.methods == ("dpo", "dco")
    child = method_experiment(exp, "dco")
    assert (child.name, child.align.method, child.align.methods) == ("tiny-dco", "dco", ())
    # A run's align key is as it was without a grid; the grid's resolved config lists them.
    assert "methods" not in child.align.to_dict()
    assert exp.align.to_dict()["methods"] == ["dpo", "dco"]
    bad = [({"align__methods": ["dpo"]}, "align.methods", "two or more different"),
           ({"align__methods": ["dpo", "dpo"]}, "align.methods", "two or more different"),
           ({"align__methods": ["dpo", "nope"]}, "align.methods[1]", "nope"),
           ({"align__methods": ["dpo", "dco"], "align__rounds": 0}, "align.methods",
            "align.rounds is 0"),
           ({"align__methods": ["dpo", "dco"], "data__language_sets": [["en", "fr"]]},
            "align.methods", "one grid at a time"),
           ({"align__method": "sft", "align__methods": ["sft", "dpo"],
             "align__trainer": {"dataset_text_field": "text"}},
            "align.trainer.dataset_text_field", "with method dpo (align.methods)")]
    for changes, field, says in bad:
        with pytest.raises(InputError) as err:
            _load(tmp_path, tiny_model, **changes)
        assert err.value.field == field and says in str(err.value), changes
        assert err.value.path is not None and "\n" not in str(err.value)


def test_a_grid_with_gold_dpo_dco_trains_dpo_on_gold(tmp_path, tiny_model):
    """``[dpo, dco, gold-dpo-dco]`` with ``target: gold``: every run votes by the gold label,
    so dpo's pairs and gold-dpo-dco's DPO term prefer the gold C where the majority is B."""
    from calm_rag.registries import ALIGN_METHODS
    from calm_rag.training.dco_gold import gold_rows
    from calm_rag.vote.pairs import build_pairs, gold_votes
    from calm_rag.vote.voting import vote_all

    exp = _load(tmp_path, tiny_model, align__target="gold",
                align__methods=["dpo", "dco", "gold-dpo-dco"])
    runs = {m: method_experiment(exp, m) for m in exp.align.methods}
    assert runs["gold-dpo-dco"].name == "tiny-gold-dpo-dco"
    assert {run.align.target for run in runs.values()} == {"gold"}
    assert "dco" not in runs["dpo"].align.to_dict()  # dpo's stage key has no dco keys
    assert runs["gold-dpo-dco"].align.to_dict()["dco"]["gold_dpo"] == 1.0
    samples = make_samples({"en": ["C", "A", "B"], "zh": ["B", "B", "C"]}, gold="C")
    assert [v.answer for v in vote_all(samples, exp.vote)] == ["B"]  # the majority
    votes = gold_votes(samples, exp.vote)
    assert [(v.answer, v.status) for v in votes] == [("C", "gold")]
    pairs = build_pairs(samples, votes, exp.vote)
    dpo_rows = ALIGN_METHODS.get("dpo", "align.method").rows(samples, votes, pairs)
    assert sorted((p.lang, p.chosen_answer, p.rejected_answer) for p in dpo_rows) == [
        ("en", "C", "A"), ("en", "C", "B"), ("zh", "C", "B"), ("zh", "C", "B")]
    method = ALIGN_METHODS.get("gold-dpo-dco", "align.method")
    rows, has_gold, _ = gold_rows(method.rows(samples, votes, pairs),
                                  runs["gold-dpo-dco"].align)
    # Every two of A-D in (en, zh): the three with C compare it, C chosen.
    compared = [(r.chosen, r.rejected) for r, has in zip(rows, has_gold, strict=True) if has]
    assert compared == [("C", "A"), ("C", "B"), ("C", "D")]
    assert len(rows) == 6


@pytest.mark.slow
def test_dpo_and_dco_share_samples_and_votes(tmp_path, sharp_model):
    exp = _load(tmp_path, sharp_model, align__methods=["dpo", "dco"],
                align__max_length=640, align__epochs=1, align__batch_size=40,
                evaluation__option_scores=True)
    result = run_experiment(exp, progress=False)
    grid = json.loads((result.folder / "grid.json").read_text())
    dpo, dco = grid["methods"]["dpo"], grid["methods"]["dco"]
    # The second run computed nothing but its training and its after-evaluation.
    assert set(dpo["recomputed"]) >= {"sample", "answers", "align", "option_scores"}
    assert set(dco["recomputed"]) == {"sample", "answers", "align", "option_scores"}
    sampled = [s for s in result.stages if s["stage"] == "sample"]
    trained = [s for s in sampled if s["label"] == "r1/train/zero-shot"]
    assert [s["cached"] for s in trained] == [False, True]
    assert trained[0]["key"] == trained[1]["key"]
    before = [s for s in sampled if "/before/" in s["label"]]
    assert before and sum(not s["cached"] for s in before) == len(before) // 2
    # Same samples: the same vote, and the same before-figures, exactly.
    assert dpo["votes"] == dco["votes"] and dpo["votes"]["questions_voted"] == 4
    for cell in ("train/before", "heldout/before"):
        assert dpo["cells"][cell] == dco["cells"][cell]
        assert grid["cells"][f"{cell} [dpo]"] == grid["cells"][f"{cell} [dco]"]
    # Different trainings, one step each: dco on every two of the 5 options in (en, fr),
    # 4 questions x 10 rows.
    assert dco["training"]["rows"] == 40 and dco["training"]["questions"] == 4
    assert dpo["training"]["rows"] == dpo["votes"]["pairs"] and dpo["training"]["questions"] is None
    after = [s["key"] for s in result.stages if s["stage"] == "align"]
    assert len(after) == 2 and after[0] != after[1]
    adapters = [_lora_b(summary["folder"]) for summary in (dpo, dco)]
    assert all(any(w.abs().max() > 0 for w in a.values()) for a in adapters)  # B starts at 0
    assert adapters[0].keys() == adapters[1].keys()
    assert any(not adapters[0][k].equal(adapters[1][k]) for k in adapters[0])
    report = (result.folder / "report.md").read_text()
    for line in ("## Vote and training per method", "| dco | heldout/after | zero-shot |",
                 "| dpo | heldout | zero-shot |", "Krippendorff"):
        assert line in report


def _lora_b(folder: str) -> dict:
    """The LoRA B matrices of a run's adapter (zero until trained)."""
    from safetensors.torch import load_file

    weights = load_file(f"{folder}/adapter/adapter_model.safetensors")
    return {name: w for name, w in weights.items() if "lora_B" in name}
