"""Alignment: the ``align:`` config, SFT targets, and real TRL + PEFT training on a tiny Llama.

DPO and SFT run for real (TRL's trainers, a PEFT LoRA adapter) on the 2-layer Llama of
``tests/tiny_model.py``; each run takes a few seconds. Whether training worked is judged by
a plain forward pass on the merged model against the base, not by the trainer's own logs.
The runs here ask for the merged model (`merge: True`); tests/test_launcher.py covers the
adapter-only default, the launcher, checkpoints and trackers.
"""

from __future__ import annotations

import json

import pytest

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.records import PreferencePair, Question, Sample, Vote
from calm_rag.registries import ALIGN_METHODS
from calm_rag.sampling.prompts import messages_from_fields
from calm_rag.training import (
    AlignConfig,
    LoraConfig,
    TrainResult,
    dpo_row,
    sft_targets,
    train_dpo,
    train_sft,
)
from calm_rag.training.methods import AlignMethod
from tests.helpers import (
    MILK_INSTRUCTION,
    MILK_OPTIONS,
    MILK_STEMS,
    milk_input,
    milk_pairs,
    milk_samples,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("trl")

# A high learning rate, several epochs and adapters on every linear layer: the random tiny
# model must move visibly in seconds (attention-only LoRA moves it about a third as much).
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FAST = dict(learning_rate=2e-2, epochs=4, batch_size=4, max_length=160, threads=1, merge=True,
            lora=LoraConfig(r=4, alpha=8, dropout=0.0, targets=ALL_LINEAR))


def response_logprob(model, tokenizer, instruction: str, input_: str, response: str) -> float:
    """Sum of the response tokens' log-probabilities after the chat prompt (plain forward)."""
    chat = messages_from_fields(instruction, input_)
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": response}],
                                         tokenize=True, return_dict=True)["input_ids"]
    assert full[: len(prompt)] == prompt
    ids = torch.tensor([full])
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(-1, targets[:, None])[:, 0]
    return float(picked[len(prompt) - 1 :].sum())


def margin(model, tokenizer, pairs: list[PreferencePair]) -> float:
    """Mean log-prob of chosen minus rejected over the distinct pairs."""
    values = [response_logprob(model, tokenizer, p.instruction, p.input, p.chosen)
              - response_logprob(model, tokenizer, p.instruction, p.input, p.rejected)
              for p in {p.question_id: p for p in pairs}.values()]
    return sum(values) / len(values)


def load(folder, dtype=None):
    dtype = dtype or torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)



@pytest.fixture(scope="module")
def tiny_bf16(tiny_model, tmp_path_factory):
    """The tiny model saved in bfloat16, as the default generator's folder is."""
    folder = tmp_path_factory.mktemp("tiny-bf16")
    model, tokenizer = load(tiny_model, torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dpo_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "align"
    return train_dpo(str(tiny_model), milk_pairs(), AlignConfig(**FAST, precision="fp32"), out)


# --------------------------------------------------------------------------- DPO


def test_dpo_raises_the_chosen_over_rejected_margin(tiny_model, dpo_run):
    pairs = milk_pairs()
    before = margin(*load(tiny_model), pairs)
    after = margin(*load(dpo_run.merged_dir), pairs)
    # nats; "pantry" is outside the tiny tokenizer's corpus, so the base already prefers the
    # chosen response (~30), and DPO widens the gap by about 6.5
    assert after - before > 2.0, (before, after)
    assert dpo_run.rows == len(pairs)


def test_dpo_adapter_loads_with_peft_and_matches_the_merged_model(tiny_model, dpo_run):
    base, tokenizer = load(tiny_model)
    adapted = peft.PeftModel.from_pretrained(base, dpo_run.adapter_dir).eval()
    merged, _ = load(dpo_run.merged_dir)
    ids = tokenizer("Question: Where is milk kept? Answer: B", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected, got = adapted(ids).logits, merged(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(load(tiny_model)[0](ids).logits, got, atol=1e-4)  # it did train


def test_dpo_merged_model_generates_with_its_chat_template(dpo_run):
    model, tokenizer = load(dpo_run.merged_dir)
    assert tokenizer.chat_template  # saved with the model: vLLM and hf apply it
    chat = messages_from_fields(MILK_INSTRUCTION, milk_input(MILK_STEMS[0]))
    batch = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                          return_dict=True, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=5, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > batch["input_ids"].shape[1]
    assert model.config.use_cache


def test_dpo_writes_its_log_and_loss_plot(dpo_run):
    folder = dpo_run.adapter_dir.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter", "loss.png", "merged", "train_log.json"]
    assert dpo_run.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "train_log.json").read_text())
    assert saved["method"] == "dpo" and saved["rows"] == dpo_run.rows
    assert saved["config"]["lora"]["r"] == 4
    # 8 rows, batch 4, 4 epochs: one entry per optimiser step
    assert [s["step"] for s in saved["steps"]] == list(range(1, 9))
    assert saved["steps"] == dpo_run.log
    assert all("rewards/margins" in s for s in dpo_run.log)
    assert dpo_run.log[-1]["loss"] < dpo_run.log[0]["loss"]
    assert not list(folder.parent.glob(".align.*"))  # no staging folder left behind



def test_the_result_is_what_its_folder_reads_back(dpo_run):
    """The align stage's cache hit and a fresh training are one value."""
    assert TrainResult.load(dpo_run.folder) == dpo_run
    assert dpo_run.method == "dpo" and dpo_run.target == "majority"
    assert dpo_run.merged_dir == dpo_run.folder / "merged"
    assert dpo_run.final_loss == dpo_run.log[-1]["loss"]


# train_log.json of an align cache entry as the code before issue 27 wrote it (the writer,
# artifacts.write_log, is unchanged: this is what every cache entry holds).
OLD_LOG = {
    "method": "sft", "config": {"method": "sft", "target": "gold", "rounds": 1, "merge": False},
    "rows": 7, "seconds": 12.5, "processes": 1, "backend": None, "resumed_from": None,
    "summary": {"train_runtime": 11.0},
    "steps": [{"loss": 2.5, "step": 1, "epoch": 0.5}, {"loss": 1.25, "step": 2, "epoch": 1.0}],
}


def test_an_align_folder_the_old_code_wrote_loads(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "train_log.json").write_text(json.dumps(OLD_LOG))
    result = TrainResult.load(tmp_path)
    assert (result.method, result.target, result.rows, result.seconds) == ("sft", "gold", 7, 12.5)
    assert result.final_loss == 1.25 and [s["step"] for s in result.log] == [1, 2]
    assert result.adapter_dir == tmp_path / "adapter" and result.merged_dir is None
    assert result.loss_plot == tmp_path / "loss.png"


def test_the_pipelines_old_name_for_it_still_imports_with_a_warning():
    with pytest.warns(DeprecationWarning, match="now calm_rag.training.TrainResult"):
        from calm_rag.pipeline import TrainingResult
    assert TrainingResult is TrainResult

def test_a_log_without_its_keys_is_refused_naming_them(tmp_path):
    (tmp_path / "train_log.json").write_text(json.dumps({"method": "dpo", "steps": []}))
    with pytest.raises(InputError, match="lacks rows, seconds, config") as err:
        TrainResult.load(tmp_path)
    assert err.value.path == str(tmp_path / "train_log.json")

def test_dpo_row_is_the_sampler_chat():
    pair = milk_pairs()[0]
    row = dpo_row(pair)
    assert row["prompt"] == messages_from_fields(pair.instruction, pair.input)
    assert row["chosen"] == [{"role": "assistant", "content": pair.chosen}]
    assert row["rejected"] == [{"role": "assistant", "content": pair.rejected}]


def test_no_pairs_is_an_input_error(tiny_model, tmp_path):
    with pytest.raises(InputError, match="no preference pairs") as err:
        train_dpo(str(tiny_model), [], AlignConfig(), tmp_path / "align")
    assert err.value.hint
    assert not (tmp_path / "align").exists()


def test_prompts_longer_than_max_length_fail_and_leave_the_old_folder(tiny_model, tmp_path):
    out = tmp_path / "align"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    with pytest.raises(InputError) as err:
        train_dpo(str(tiny_model), milk_pairs(), AlignConfig(**{**FAST, "max_length": 8}), out)
    assert err.value.field == "align.max_length"
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["align"]


# --------------------------------------------------------------------------- SFT


def test_sft_raises_the_target_response_and_keeps_the_base_dtype(tiny_bf16, tmp_path):
    samples = milk_samples()
    # bf16 autocast, and an adapter on the last layer only (of two)
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, targets=ALL_LINEAR, layers=1)
    config = AlignConfig(method="sft", **{**FAST, "lora": lora}, precision="bf16")
    result = train_sft(str(tiny_bf16), samples, config, tmp_path / "align")

    def mean_logprob(folder) -> float:
        model, tokenizer = load(folder)  # both scored in float32
        values = [response_logprob(model, tokenizer, s.instruction, s.input, s.text)
                  for s in samples[: len(MILK_STEMS)]]
        return sum(values) / len(values)

    # nats over the ~10 response tokens; the trained model gains about 4.5
    assert mean_logprob(result.merged_dir) - mean_logprob(tiny_bf16) > 2.0
    saved = json.loads((result.merged_dir / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"
    adapted = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapted["layers_to_transform"] == [1]
    assert result.rows == len(samples) and result.loss_plot.is_file()
    assert result.log[-1]["loss"] < result.log[0]["loss"]


def test_no_sft_samples_is_an_input_error(tiny_model, tmp_path):
    with pytest.raises(InputError, match="no responses to fine-tune on"):
        train_sft(str(tiny_model), [], AlignConfig(method="sft"), tmp_path / "align")


def _sample(qid: str, lang: str, answer: str | None, setting: str = "zero-shot",
            gold: str = "B") -> Sample:
    question = Question(id=qid, lang=lang, stem="stem", options=MILK_OPTIONS, answer=gold)
    return Sample(question=question, text=f"Answer: {answer}", setting=setting, answer=answer,
                  instruction=MILK_INSTRUCTION, input="input")


def _vote(qid: str, setting: str, answer: str | None) -> Vote:
    return Vote(question_id=qid, setting=setting, answer=answer,
                status="majority" if answer else "tie", counts={}, by_language={},
                n_responses=0, n_parsed=0)


def test_sft_targets_follow_the_vote_of_the_same_setting():
    samples = [_sample("q1", "en", "A"), _sample("q1", "fr", "C"), _sample("q1", "zh", None),
               _sample("q1", "en", "C", setting="rag"), _sample("q2", "en", "B"),
               _sample("q3", "en", "B")]
    votes = [_vote("q1", "zero-shot", "A"), _vote("q1", "rag", "C"), _vote("q2", "zero-shot", None)]
    picked = sft_targets(samples, votes)
    assert [(s.question.id, s.lang, s.setting) for s in picked] == [
        ("q1", "en", "zero-shot"), ("q1", "en", "rag")]
    gold = sft_targets(samples, votes, target="gold")
    assert [(s.question.id, s.answer) for s in gold] == [("q2", "B"), ("q3", "B")]
    with pytest.raises(InputError, match="unknown target"):
        sft_targets(samples, votes, target="oracle")


# --------------------------------------------------------------------------- config


def align(values: dict) -> AlignConfig:
    """The ``align:`` block through the one config loader."""
    return from_mapping(AlignConfig, values, prefix="align")


def test_config_round_trips_through_a_dict():
    config = align({"method": "sft", "beta": 0.5, "epochs": 2,
                    "learning_rate": "5e-5",  # YAML 1.1 reads 5e-5 as a string
                    "lora": {"r": 16, "targets": ["q_proj", "v_proj"]}})
    assert config.learning_rate == 5e-5 and config.lora.targets == ("q_proj", "v_proj")
    assert config.lora.alpha == 16  # unset keys keep their defaults
    assert align(config.to_dict()) == config
    assert align({}) == AlignConfig()


@pytest.mark.parametrize(("values", "key", "says"), [
    ({"betta": 0.1}, "align.betta", "known keys: method, methods, target, rounds, beta"),
    ({"lora": {"rank": 8}}, "align.lora.rank", "known keys: r, alpha, dropout, targets"),
    ({"beta": "high"}, "align.beta", "expected float, got str"),
    ({"epochs": True}, "align.epochs", "expected float, got a boolean"),
    ({"batch_size": 2.5}, "align.batch_size", "expected int, got float"),
    ({"lora": {"r": "8"}}, "align.lora.r", "expected int, got str"),
    ({"lora": {"targets": "q_proj"}}, "align.lora.targets", "expected a list"),
    ({"lora": [8]}, "align.lora", "expected a mapping"),
    ({"threads": "2"}, "align.threads", "expected int, got str"),
    ({"method": "ppo"}, "align.method", "unknown align method 'ppo'"),
    ({"target": "oracle"}, "align.target", "'oracle' is not allowed"),
    ({"beta": 0}, "align.beta", "must be positive"),
    ({"beta": -1}, "align.beta", "must be positive"),
    ({"learning_rate": float("inf")}, "align.learning_rate", "must be a finite number"),
    ({"lora": {"dropout": 1.0}}, "align.lora.dropout", "must lie in [0, 1)"),
    ({"lora": {"r": 0}}, "align.lora.r", "must be at least 1"),
    ({"rounds": -1}, "align.rounds", "must lie in [0, 100]"),
    ({"precision": "fp8"}, "align.precision", "'fp8' is not allowed"),
    ({"lora": {"layers": 0}}, "align.lora.layers", "must be at least 1"),
    ({"seed": -1}, "align.seed", "must lie in [0, "),
    ({"threads": 0}, "align.threads", "must be at least 1"),
])
def test_bad_config_names_the_key(values, key, says):
    with pytest.raises(InputError) as err:
        align(values)
    assert err.value.field == key
    assert says in str(err.value)


def test_bad_method_hint_lists_the_methods():
    with pytest.raises(InputError) as err:
        AlignConfig(method="ppo")
    assert err.value.field == "method"
    assert err.value.hint == "use one of dco, dpo, gold-dpo-dco, sft"


# --------------------------------------------------------------------------- capabilities


class _Echo(AlignMethod[PreferencePair]):
    """A method that trains nothing: only its capabilities are looked at."""

    trl_config = "SFTConfig"

    @classmethod
    def rows(cls, samples, votes, pairs):
        return pairs

    @classmethod
    def train(cls, model_path, rows, config, out_dir, adapter=None):
        raise AssertionError("not trained here")


@pytest.fixture
def echo_method():
    ALIGN_METHODS.register("test-echo", _Echo)
    yield "test-echo"
    ALIGN_METHODS.unregister("test-echo")


def test_capabilities_are_on_the_registered_classes():
    assert {name: (m.trl_config, m.launchable) for name, m in ALIGN_METHODS.items()} == {
        "dco": ("DPOConfig", True), "dpo": ("DPOConfig", True),
        "gold-dpo-dco": ("DPOConfig", True), "sft": ("SFTConfig", True)}


def test_trainer_keys_follow_the_methods_trl_config(echo_method):
    # dataset_text_field is a field of SFTConfig, the one this method names
    config = AlignConfig(method=echo_method, trainer={"dataset_text_field": "text"})
    assert config.trainer == {"dataset_text_field": "text"}
    with pytest.raises(InputError, match="not a field of TRL's SFTConfig") as err:
        AlignConfig(method=echo_method, trainer={"beta": 0.2})
    assert err.value.field == "trainer.beta"


def test_a_method_its_ranks_cannot_rebuild_is_refused_a_launcher(echo_method):
    with pytest.raises(InputError, match="'test-echo' cannot run under a launcher") as err:
        AlignConfig(method=echo_method, launcher="accelerate")
    assert err.value.field == "launcher" and err.value.hint.endswith("dco, dpo, gold-dpo-dco, sft")
    assert AlignConfig(method=echo_method).launcher == "none"


def test_a_method_must_name_its_trl_config_and_a_launchable_one_its_trainer():
    with pytest.raises(TypeError, match="must name its TRL config"):
        type("NoConfig", (_Echo,), {"trl_config": None})
    with pytest.raises(TypeError, match="defines no trainer"):
        type("NoTrainer", (_Echo,), {"launchable": True})
