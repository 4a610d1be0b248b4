"""``sampling.chat_template_kwargs`` reach every place that renders a prompt: the sampler, the
log-prob scorer and DPO training (TRL renders each row's prompt itself). The tiny model's chat
template here refuses to render without its keyword, so a stage that forgot them fails."""

from __future__ import annotations

import json
import shutil

import pytest

from calm_rag.sampling.chat import encode_chat

MARKED = ("{% if marker is not defined %}{{ raise_exception('rendered without the marker') }}"
          "{% endif %}{{ marker }}")


@pytest.fixture
def marked_model(sharp_model, tmp_path):
    """The sharp tiny model whose chat template needs ``marker``."""
    from transformers import AutoTokenizer

    folder = tmp_path / "marked"
    shutil.copytree(sharp_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = MARKED + tokenizer.chat_template
    tokenizer.save_pretrained(folder)
    with pytest.raises(Exception, match="rendered without the marker"):
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])
    assert encode_chat(tokenizer, [{"role": "user", "content": "hi"}], {"marker": "M"})
    return folder


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_scorer_and_training_render_prompts_as_the_sampler_did(marked_model, tmp_path, method):
    from tests.helpers import experiment, latest_run, run_cli, write_experiment

    marker = {"marker": "M"}
    data = experiment(marked_model, tmp_path / "runs", sampling__chat_template_kwargs=marker,
                      evaluation__sampling__chat_template_kwargs=marker, align__max_length=512,
                      align__method=method)
    assert run_cli(write_experiment(tmp_path, data)) == 0
    run = latest_run(tmp_path / "runs")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert any(s["extraction"] == "logprob" for s in samples)  # the scorer rendered them
    assert (run / "pairs.jsonl").read_text().strip()  # and training had rows
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert [s["cached"] for s in stages if s["stage"] == "align"] == [False]
