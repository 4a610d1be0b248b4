"""DCO (``align.method: dco``): its loss on hand-computed numbers and against finite
differences, the rows ``align.dco`` asks for, and real TRL + PEFT training on the tiny Llama
whose first logged loss is the one a plain forward pass computes."""

from __future__ import annotations

import json
import math

import pytest

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.records import Question, Sample, Vote
from calm_rag.registries import ALIGN_METHODS
from calm_rag.sampling.prompts import messages_from_fields
from calm_rag.training import AlignConfig
from calm_rag.training.config import DcoConfig
from calm_rag.vote.pairs import build_pairs
from calm_rag.vote.voting import VoteConfig
from tests.helpers import (
    TINY_ALIGN,
    experiment,
    latest_run,
    make_samples,
    run_cli,
    write_experiment,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")

from calm_rag.training.dco import (  # noqa: E402 (needs torch)
    dco_loss,
    dco_losses,
    dco_questions,
    dco_rows,
    train_dco,
)
from calm_rag.training.dco_gold import (  # noqa: E402 (needs torch)
    gold_dco_losses,
    gold_rows,
    train_gold_dco,
)

# ---------------------------------------------------------------------------- the loss


def as_tensors(*rows: tuple[float, ...]) -> tuple:
    """Columns of ``rows`` as float64 tensors: ((c1, r1, c2, r2), (rc1, rr1, rc2, rr2))."""
    columns = [torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True)]
    return tuple(columns[:4]), tuple(columns[4:])


def test_the_loss_on_hand_computed_rows():
    """beta = 2, two rows.

    Row 1: c1=-1 r1=-3 c2=-2 r2=-2 | rc1=-2 rr1=-2 rc2=-1 rr2=-4
      m1 = (-1+2) - (-3+2) = 2;  m2 = (-2+1) - (-2+4) = -3;  o1 = 0;  o2 = 3
      loss = |2 - 3/2| + |-3 - 2*0| = 0.5 + 3 = 3.5
    Row 2: c1=-2 r1=-1 c2=-1 r2=-3 | rc1=-1 rr1=-2 rc2=-2 rr2=-2
      m1 = (-2+1) - (-1+2) = -2;  m2 = (-1+2) - (-3+2) = 2;  o1 = 1;  o2 = 0
      loss = |-2 - 0/2| + |2 - 2*1| = 2 + 0 = 2
    Mean: (3.5 + 2) / 2 = 2.75.
    """
    policy, reference = as_tensors((-1, -3, -2, -2, -2, -2, -1, -4),
                                   (-2, -1, -1, -3, -1, -2, -2, -2))
    assert dco_losses(policy, reference, beta=2.0).tolist() == [3.5, 2.0]
    assert dco_loss(policy, reference, beta=2.0).item() == 2.75


def test_the_loss_is_the_same_with_the_answers_swapped():
    """Swapping c and r negates every margin and preference: |-x| = |x|. Row 1 at beta = 1:
    |2 - 3| + |-3 - 0| = 4."""
    policy, reference = as_tensors((-1, -3, -2, -2, -2, -2, -1, -4))
    (c1, r1, c2, r2), (rc1, rr1, rc2, rr2) = policy, reference
    assert dco_loss(policy, reference, 1.0).item() == 4.0
    assert dco_loss((r1, c1, r2, c2), (rr1, rc1, rr2, rc2), 1.0).item() == 4.0


def test_the_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
                   for _ in range(8))

    def loss(*values):
        return dco_loss(values[:4], values[4:], beta=1.7)

    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- the rows

def vote(answer: str | None, qid: str = "q1") -> Vote:
    return Vote(question_id=qid, setting="zero-shot", answer=answer, status="majority",
                counts={}, by_language={}, n_responses=0, n_parsed=0)


def questions(given: dict[str, list[str | None]], target: str | None = "C"):
    samples = make_samples(given)
    votes = [vote(target)]
    return dco_questions(samples, votes, build_pairs(samples, votes, VoteConfig()))


def rows_for(given: dict[str, list[str | None]], **options):
    """The rows of one question whose samples gave ``given`` (voted C), and the skips."""
    return dco_rows(questions(given), DcoConfig(**options))


def summary(rows) -> list[tuple[str, str, str, str]]:
    return [(r.lang_1, r.lang_2, r.chosen, r.rejected) for r in rows]


def test_every_two_options_in_every_pair_of_languages_by_default():
    rows, skipped = rows_for({"en": ["C", "A"], "zh": ["C", "B"], "fr": ["C"]})
    assert len(rows) == 3 * 6 and not skipped  # (en,zh) (en,fr) (zh,fr) x C(4, 2)
    assert summary(rows)[:2] == [("en", "zh", "A", "B"), ("en", "zh", "A", "C")]
    first = rows[0]
    assert (first.chosen_1, first.rejected_1) == ("Answer: A. town", "Answer: B. school")
    assert (first.chosen_2, first.rejected_2) == ("答案: A. town", "答案: B. school")
    assert first.prompt_1 == messages_from_fields("instruction en", "input en")
    assert first.prompt_2 == messages_from_fields("instruction zh", "input zh")
    assert first.trl_row()["chosen_2"] == [{"role": "assistant", "content": "答案: A. town"}]


def test_sampled_answers_and_the_votes_answers():
    given = {"en": ["C", "A"], "zh": ["C", "B"], "fr": ["C"]}
    sampled, _ = rows_for(given, answers="sampled", languages="listed", pairs=[["fr", "en"]])
    assert summary(sampled) == [("fr", "en", "A", "B"), ("fr", "en", "A", "C"),
                                ("fr", "en", "B", "C")]
    # The target against what CALM's pairs reject (en's A, zh's B), pivot zh as language 1.
    voted, _ = rows_for(given, answers="vote", languages="pivot", pivot="zh")
    assert summary(voted) == [("zh", "en", "C", "A"), ("zh", "en", "C", "B"),
                              ("zh", "fr", "C", "A"), ("zh", "fr", "C", "B")]


def test_no_target_gives_no_vote_rows():
    rows, _ = dco_rows(dco_questions(make_samples({"en": ["A"], "zh": ["B"]}), [vote(None)], []),
                       DcoConfig(answers="vote"))
    assert rows == []


def test_a_pair_a_language_cannot_give_is_skipped_and_counted():
    # Responses: en gave C, A, B and zh C, B, A; fr only C. Vote C against A and B.
    rows, skipped = rows_for({"en": ["C", "A", "B"], "zh": ["C", "B", "A"], "fr": ["C"]},
                             answers="vote", completions="responses")
    assert summary(rows) == [("en", "zh", "C", "A"), ("en", "zh", "C", "B")]
    assert rows[0].chosen_2 == "zh response 0: Answer: C"
    assert rows[0].rejected_2 == "zh response 2: Answer: A"
    assert skipped == {"no response for an answer": 4}  # (en,fr) and (zh,fr), twice each
    listed, skipped = rows_for({"en": ["C"], "zh": ["C"]}, languages="listed",
                               pairs=[["en", "de"], ["zh", "en"]])
    assert {r.lang_1 + r.lang_2 for r in listed} == {"zhen"}
    assert skipped == {"language not asked": 1}


def test_an_option_without_text_in_one_language_is_skipped():
    en = make_samples({"en": ["A"]})
    zh_question = Question(id="q1", lang="zh", stem="stem", options={"A": "镇", "B": " "})
    zh = [Sample(question=zh_question, text="答案: A", answer="A", instruction="i", input="x")]
    rows, skipped = dco_rows(dco_questions(en + zh, [], []), DcoConfig())
    # Every two of en's letters A-D: each pair holds B (blank in zh), C or D (not in zh).
    assert rows == [] and skipped == {"no option for an answer": 6}


def test_config_checks_and_keys():
    config = from_mapping(AlignConfig, {"method": "dco", "dco": {
        "beta": 2, "languages": "listed", "pairs": [["EN", "cn"]]}}, prefix="align")
    assert config.dco.beta == 2.0 and config.dco.pairs == (("en", "zh"),)
    assert config.to_dict()["dco"]["pairs"] == [["en", "zh"]]
    assert from_mapping(AlignConfig, config.to_dict(), prefix="align") == config
    assert "dco" not in AlignConfig().to_dict()  # dpo's stage key stays as it was
    for values, key, says in [
        ({"beta": 0}, "align.dco.beta", "must be positive"),
        ({"languages": "listed"}, "align.dco.pairs", "languages: listed needs pairs"),
        ({"pairs": [["en", "zh"]]}, "align.dco.pairs", "read only with languages: listed"),
        ({"languages": "listed", "pairs": [["en", "en"]]}, "align.dco.pairs", "two different"),
        ({"pivot": "klingon"}, "align.dco.pivot", "unknown language code"),
        ({"answers": "gold"}, "align.dco.answers", "'gold' is not allowed"),
    ]:
        with pytest.raises(InputError) as err:
            from_mapping(AlignConfig, {"method": "dco", "dco": values}, prefix="align")
        assert err.value.field == key and says in str(err.value), values


def test_the_method_is_registered_with_its_capabilities():
    method = ALIGN_METHODS.get("dco", "align.method")
    assert (method.trl_config, method.launchable) == ("DPOConfig", True)
    samples = make_samples({"en": ["C"], "zh": ["B"]})
    assert method.rows(samples, [vote("C")], []) == dco_questions(samples, [vote("C")], [])


def test_dpo_loss_keys_are_refused(tmp_path):
    config = AlignConfig(method="dco", trainer={"loss_type": ["ipo"]})
    with pytest.raises(InputError) as err:
        train_dco("unused", questions({"en": ["C"], "zh": ["C"]}), config, tmp_path / "out")
    assert err.value.field == "align.trainer.loss_type"


# ---------------------------------------------------------------------------- training

MILK = {"en": ("Answer with the letter.", "Where is milk kept?",
               {"A": "pantry", "B": "refrigerator", "C": "oven"}),
        "fr": ("Répondez par la lettre.", "Où garde-t-on le lait ?",
               {"A": "placard", "B": "réfrigérateur", "C": "four"})}


def milk_questions() -> list:
    """Two questions in en and fr: 2 x C(3, 2) = 6 rows with the default keys."""
    return dco_questions(milk_samples(), [], [])


def milk_samples() -> list:
    """One sample a language of :func:`milk_questions`' questions (gold B)."""
    samples = []
    for qid in ("q0", "q1"):
        for lang, (instruction, stem, options) in MILK.items():
            question = Question(id=qid, lang=lang, stem=stem, options=options, answer="B")
            samples.append(Sample(question=question, text="B", answer="B",
                                  instruction=instruction, input=f"{stem} ({qid})"))
    return samples


def logprob(model, tokenizer, prompt, response: str) -> float:
    """Sum of the response tokens' log-probabilities after the chat prompt (plain forward)."""
    start = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}],
                                         tokenize=True, return_dict=True)["input_ids"]
    ids = torch.tensor([full])
    with torch.no_grad():
        logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)
    picked = logprobs.gather(-1, ids[0, 1:, None])[:, 0]
    return float(picked[len(start) - 1:].sum())


def plain_loss(policy, reference, tokenizer, rows, beta: float) -> float:
    """DCO's loss over ``rows`` from plain forward passes of the two models."""
    def four(model, row):
        return tuple(torch.tensor([logprob(model, tokenizer, prompt, text)])
                     for prompt, text in ((row.prompt_1, row.chosen_1),
                                          (row.prompt_1, row.rejected_1),
                                          (row.prompt_2, row.chosen_2),
                                          (row.prompt_2, row.rejected_2)))

    return sum(dco_loss(four(policy, r), four(reference, r), beta).item()
               for r in rows) / len(rows)


def test_training_lowers_the_loss_a_plain_forward_computes(tiny_model, tmp_path):
    config = AlignConfig(method="dco", **{**TINY_ALIGN, "batch_size": 6}, epochs=4, merge=True,
                         dco=DcoConfig(beta=2.0))
    questions_ = milk_questions()
    result = train_dco(str(tiny_model), questions_, config, tmp_path / "align")
    rows, _ = dco_rows(questions_, config.dco)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    after = transformers.AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    before = plain_loss(base, base, tokenizer, rows, 2.0)  # the policy is the reference
    # One batch holds every row, so step 1's loss is the untrained policy's on all of them.
    assert result.rows == 6 and len(result.log) == 4
    assert result.log[0]["loss"] == pytest.approx(before, rel=1e-4)
    # Each later step logs the loss before its update; the merged model is after the last.
    assert plain_loss(after, base, tokenizer, rows, 2.0) < result.log[-1]["loss"] < before
    assert all("dco/margin_1" in step for step in result.log)
    saved = json.loads((result.folder / "train_log.json").read_text())
    assert saved["method"] == "dco" and saved["config"]["dco"]["beta"] == 2.0


def test_a_run_through_the_cli_trains_dco(tiny_model, tmp_path):
    # The bundled questions' prompts run to ~300 byte-level tokens of the tiny tokenizer.
    data = experiment(tiny_model, tmp_path / "runs", align__method="dco",
                      align__max_length=640, align__batch_size=8)
    assert run_cli(write_experiment(tmp_path, data)) == 0
    run = latest_run(tmp_path / "runs")
    from safetensors.torch import load_file

    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().max() > 0 for w in lora_b)  # B starts at 0: it trained
    log = json.loads((run / "manifest.json").read_text())["stages"]
    assert any(s["stage"] == "align" and not s["cached"] for s in log)


@pytest.mark.slow
def test_dco_under_accelerate_with_two_cpu_processes(tiny_model, tmp_path):
    """The ranks rebuild DCO's trainer by its name (``launchable``): 6 rows, 3 a rank, batches
    of 3, so one optimiser step, logged by rank 0 with DCO's own metrics."""
    config = AlignConfig(method="dco", **{**TINY_ALIGN, "batch_size": 3}, epochs=1,
                         launcher="accelerate", num_processes=2)
    result = train_dco(str(tiny_model), milk_questions(), config, tmp_path / "align")
    saved = json.loads((result.folder / "train_log.json").read_text())
    assert saved["processes"] == 2 and saved["backend"] == "gloo"
    assert [s["step"] for s in saved["steps"]] == [1] and "dco/margin_1" in saved["steps"][0]
    assert result.rows == 6 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((result.folder / "rows.json").read_text()) == {
        "built": 6, "questions": 2, "of_questions": 2, "skipped": {}}


# ------------------------------------------------ DCO plus DPO on gold labels (gold-dpo-dco)

def dpo_term(margin: float, beta: float) -> float:
    """DPO's sigmoid loss on one pair, written out: -log σ(βm) = log(1 + e^(-βm))."""
    return math.log1p(math.exp(-beta * margin))


def test_the_gold_loss_is_dco_plus_dpo_on_hand_computed_rows():
    """The two rows of the DCO case above (beta_dco = 2: DCO terms 3.5 and 2), row 1 comparing
    the gold answer (chosen), row 2 two wrong answers; beta_dpo = 0.5, weight 2.

    Row 1: m1 = 2, m2 = -3; DPO = log(1 + e^-1) + log(1 + e^1.5) = 0.31326 + 1.70141
      = 2.01467; loss = 3.5 + 2 * 2.01467 = 7.52935
    Row 2: no gold, DPO adds 0; loss = 2
    Mean: (7.52935 + 2) / 2 = 4.76467.
    """
    policy, reference = as_tensors((-1, -3, -2, -2, -2, -2, -1, -4),
                                   (-2, -1, -1, -3, -1, -2, -2, -2))
    gold = torch.tensor([1.0, 0.0], dtype=torch.float64)
    losses = gold_dco_losses(policy, reference, gold, dco_beta=2.0, dpo_beta=0.5, weight=2.0)
    dpo = dpo_term(2, 0.5) + dpo_term(-3, 0.5)
    dco = dco_losses(policy, reference, beta=2.0).tolist()
    assert losses.tolist() == pytest.approx([dco[0] + 2 * dpo, dco[1]], abs=1e-12)
    assert losses.tolist() == pytest.approx([7.529349931, 2.0], abs=1e-9)
    assert losses.mean().item() == pytest.approx(4.764674966, abs=1e-9)
    # With no gold row it is DCO's loss, exactly.
    assert gold_dco_losses(policy, reference, gold * 0, 2.0, 0.5, 2.0).tolist() == dco


def test_the_gold_loss_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(1)
    inputs = tuple(torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
                   for _ in range(8))
    gold = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)

    def loss(*values):
        return gold_dco_losses(values[:4], values[4:], gold, 1.7, 0.3, 1.5).mean()

    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


def test_gold_rows_put_the_gold_answer_first():
    samples = make_samples({"en": ["C", "A"], "zh": ["C", "B"]}, gold="B")
    method = ALIGN_METHODS.get("gold-dpo-dco", "align.method")
    assert (method.trl_config, method.launchable, method.own_keys) == ("DPOConfig", True, "dco")
    questions_ = method.rows(samples, [vote("C")], [])  # the vote's C is not the gold B
    assert [q.gold for q in questions_] == ["B"]
    rows, has_gold, skipped = gold_rows(questions_, AlignConfig(method="gold-dpo-dco"))
    # Every two of A-D in (en, zh), in option order; (A, B) turned so that B is chosen.
    assert [(r.chosen, r.rejected) for r in rows] == [
        ("B", "A"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D"), ("C", "D")]
    assert has_gold == [True, False, False, True, True, False] and not skipped
    turned = rows[0]
    assert (turned.chosen_1, turned.rejected_1) == ("Answer: B. school", "Answer: A. town")
    assert (turned.chosen_2, turned.rejected_2) == ("答案: B. school", "答案: A. town")


def test_gold_dpo_dco_is_refused_without_gold():
    config = AlignConfig(method="gold-dpo-dco")
    method = ALIGN_METHODS.get("gold-dpo-dco", "align.method")
    no_gold = method.rows(make_samples({"en": ["C"], "zh": ["B"]}, gold=None), [], [])
    cases = [(no_gold, config, "align.method", "none of the 1 questions has one"),
             (method.rows(make_samples({"en": ["C"], "zh": ["B"]}, gold="A"), [], []),
              AlignConfig(method="gold-dpo-dco", dco=DcoConfig(answers="sampled")),
              "align.dco.answers", "none of the 1 DCO rows compares a gold answer")]
    for rows, config_, field, says in cases:
        with pytest.raises(InputError) as err:
            train_gold_dco("unused", rows, config_, "unused")
        assert err.value.field == field and says in str(err.value)
        assert "\n" not in str(err.value)
    mixed = make_samples({"en": ["C"]}, gold="C") + make_samples({"zh": ["B"]}, gold="B")
    with pytest.raises(InputError, match="different gold answers in its languages: B, C"):
        method.rows(mixed, [], [])
    with pytest.raises(InputError) as err:
        from_mapping(AlignConfig, {"method": "gold-dpo-dco", "dco": {"gold_dpo": 0}},
                     prefix="align")
    assert err.value.field == "align.dco.gold_dpo" and "must be positive" in str(err.value)


def plain_gold_loss(policy, reference, tokenizer, rows, has_gold, config) -> float:
    """The gold-dpo-dco loss over ``rows`` from plain forward passes of the two models: DCO's
    (:func:`plain_loss`) plus DPO's on each gold row's two languages, computed apart."""
    dpo = 0.0
    for row, has in zip(rows, has_gold, strict=True):
        if has:
            for prompt, chosen, rejected in ((row.prompt_1, row.chosen_1, row.rejected_1),
                                             (row.prompt_2, row.chosen_2, row.rejected_2)):
                margin = ((logprob(policy, tokenizer, prompt, chosen)
                           - logprob(reference, tokenizer, prompt, chosen))
                          - (logprob(policy, tokenizer, prompt, rejected)
                             - logprob(reference, tokenizer, prompt, rejected)))
                dpo += dpo_term(margin, config.beta)
    return (plain_loss(policy, reference, tokenizer, rows, config.dco.beta)
            + config.dco.gold_dpo * dpo / len(rows))


def test_gold_dpo_dco_training_lowers_the_loss_a_plain_forward_computes(tiny_model, tmp_path):
    config = AlignConfig(method="gold-dpo-dco", **{**TINY_ALIGN, "batch_size": 6}, epochs=3,
                         merge=True, beta=0.5, dco=DcoConfig(gold_dpo=2.0))
    questions_ = ALIGN_METHODS.get("gold-dpo-dco", "align.method").rows(milk_samples(), [], [])
    result = train_gold_dco(str(tiny_model), questions_, config, tmp_path / "align")
    rows, has_gold, _ = gold_rows(questions_, config)
    assert has_gold == [True, False, True] * 2  # (A,B) (A,C) (B,C): gold B in two of three
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    after = transformers.AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    before = plain_gold_loss(base, base, tokenizer, rows, has_gold, config)
    # The untrained policy is the reference: every margin is 0, so DPO adds log 2 for each
    # language of the 4 gold rows, weighted 2, over 6 rows.
    dco_before = plain_loss(base, base, tokenizer, rows, config.dco.beta)
    assert before == pytest.approx(dco_before + 2 * (4 * 2) * math.log(2) / 6, rel=1e-9)
    assert result.rows == 6 and len(result.log) == 3
    assert result.log[0]["loss"] == pytest.approx(before, rel=1e-4)
    assert plain_gold_loss(after, base, tokenizer, rows, has_gold, config) < before
    assert result.log[-1]["loss"] < before and "dco/gold_dpo" in result.log[0]
    assert json.loads((result.folder / "rows.json").read_text()) == {
        "built": 6, "questions": 2, "of_questions": 2, "skipped": {}, "gold_rows": 4}
