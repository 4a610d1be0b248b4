"""``chosen_fallback: regenerate``: which languages are sampled again, which regenerated
responses are kept, how the pairs record them, and the report's chosen-language shares."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.evaluation.chosen_language import chosen_language
from calm_rag.evaluation.report import chosen_language_section
from calm_rag.pipeline.stages.regenerate import (
    Request,
    answer_hint,
    echoes_hint,
    regenerate,
    requests_for,
)
from calm_rag.records import PreferencePair, Sample
from calm_rag.sampling.base import Sampler
from calm_rag.sampling.params import SamplingParams
from calm_rag.vote.answers import DEFAULT_CHAIN
from calm_rag.vote.pairs import build_pairs
from calm_rag.vote.voting import VoteConfig, vote_all
from tests.helpers import make_samples

REGENERATE = VoteConfig(chosen_fallback="regenerate")


def split_question() -> list[Sample]:
    """en agrees on C twice; zh answers A twice: zh has no agreeing response."""
    return make_samples({"en": ["C", "C"], "zh": ["A", "A"]})


def regenerated_zh(samples: list[Sample], text: str = "解释: 因为医院。\n答案: C") -> Sample:
    zh = next(s for s in samples if s.lang == "zh")
    return replace(zh, text=text, index=2, answer="C")


# ---------------------------------------------------------------------------- pairs


def test_regenerated_response_is_the_chosen_and_recorded():
    samples = split_question()
    again = regenerated_zh(samples)
    pairs = build_pairs(samples, vote_all(samples, REGENERATE), REGENERATE, [again])
    zh = [p for p in pairs if p.lang == "zh"]
    assert len(zh) == 2 and all(p.chosen == again.text for p in zh)
    assert {p.chosen_source for p in zh} == {"regenerated"}
    assert {p.chosen_sample_id for p in zh} == {"q1/zh/zero-shot/2"}
    assert all(p.instruction == "instruction zh" for p in zh)  # the original prompt, no hint


def test_none_regenerated_drops_by_default_or_falls_back():
    samples = split_question()
    assert build_pairs(samples, vote_all(samples, REGENERATE), REGENERATE, []) == []
    then_pivot = VoteConfig(chosen_fallback="regenerate", regenerate_otherwise="pivot")
    pairs = build_pairs(samples, vote_all(samples, then_pivot), then_pivot, [])
    assert {p.chosen_source for p in pairs} == {"pivot:en"}


def test_regenerated_responses_are_read_only_by_regenerate():
    samples = split_question()
    pivot = VoteConfig(chosen_fallback="pivot")
    pairs = build_pairs(samples, vote_all(samples, pivot), pivot, [regenerated_zh(samples)])
    assert {p.chosen_source for p in pairs} == {"pivot:en"}


def test_regenerate_without_a_sampler_is_refused(tmp_path, capsys):
    samples = split_question()
    with pytest.raises(InputError, match="only `calm-rag run` has"):
        build_pairs(samples, vote_all(samples, REGENERATE), REGENERATE)
    from calm_rag.cli import main

    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in samples), encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["vote", str(path), "--chosen-fallback", "regenerate",
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    # --help offers only the fallbacks that need no generator, so argparse refuses it.
    assert exited.value.code == 2 and len(err) == 1
    assert "invalid choice: 'regenerate' (choose from 'pivot', 'skip')" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("change", "key"), [
    ({"regenerate_tries": 0}, "vote.regenerate_tries"),
    ({"regenerate_otherwise": "regenerate"}, "vote.regenerate_otherwise"),
    ({"regenerate_otherwise": "translate"}, "vote.regenerate_otherwise"),
])
def test_bad_settings_name_the_key(change, key):
    with pytest.raises(InputError, match=f"field '{key}'"):
        from_mapping(VoteConfig, {"chosen_fallback": "regenerate", **change}, prefix="vote")


def test_requests_are_the_languages_without_an_agreeing_response():
    samples = split_question() + make_samples({"en": ["B"], "zh": ["B", None]}, qid="q2")
    requests = requests_for(samples, vote_all(samples, REGENERATE), REGENERATE)
    # q2: zh agrees (its unparsed response is ignored, so nothing needs a chosen)
    assert [(r.sample.question.id, r.sample.lang, r.target, r.first_index)
            for r in requests] == [("q1", "zh", "C", 2)]


# ---------------------------------------------------------------------------- keep or drop


class Scripted(Sampler):
    """Replies with given texts, recording the chats it was asked (keep/drop, no model)."""

    Options = dict

    def __init__(self, replies: list[list[str]]) -> None:
        self.replies, self.chats = replies, []

    def generate(self, prompts, params):
        self.chats += prompts
        return self.replies[: len(prompts)]


def test_keeps_only_the_target_in_the_prompts_language():
    zh = next(s for s in split_question() if s.lang == "zh")
    replies = [["解释: 医院有医生和病人。\n答案: C",         # kept
                "Explanation: a hospital has doctors.\nAnswer: C",  # English: dropped
                "解释: 学校里有很多学生。\n答案: B",         # another answer: dropped
                "请用中文解释原因\n答案: C"]]                # echoes the hint: dropped
    sampler = Scripted(replies)
    kept = regenerate([Request(zh, "C", 2)], sampler, SamplingParams(n=4), DEFAULT_CHAIN)
    assert [s.text for s in kept] == [replies[0][0]]
    assert (kept[0].index, kept[0].answer, kept[0].lang) == (2, "C", "zh")
    asked = sampler.chats[0][0]["content"]
    assert asked.endswith(answer_hint("zh", "C")) and "正确答案是 C" in asked
    assert kept[0].input.endswith(answer_hint("zh", "C"))  # the record says what was asked


def test_traditional_chinese_wants_its_own_script():
    from calm_rag.pipeline.stages.regenerate import in_language

    assert in_language("解釋: 醫院有醫生和病人。\n答案: C", "zh-tw")
    assert not in_language("解释: 医院有医生和病人。\n答案: C", "zh-tw")  # simplified
    assert in_language("答案: C", "zh-tw") and in_language("答案: C", "zh")  # either script
    assert answer_hint("zh-hant", "C") == "正確答案是 C。請用繁體中文解釋原因。"


def test_hint_echo_is_told_apart():
    hint = answer_hint("en", "B")
    assert echoes_hint("B. Explain why, in English.", hint, "B")
    assert not echoes_hint("Explanation: milk spoils when warm.\nAnswer: B", hint, "B")


@pytest.mark.slow
def test_real_sampler_keeps_what_passes_and_drops_the_rest():
    """The bundled default model, sampled for real: every kept response passes all three
    checks, every other response fails one."""
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.pipeline.stages.regenerate import in_language
    from calm_rag.sampling import make_sampler
    from calm_rag.vote.answers import extract_answer

    questions = [q for q in load_bundled("commonsense", ["en", "zh"]) if q.id == "cs-001"]
    real = make_sampler("hf", {"threads": 2, "dtype": "float32", "progress": False})

    class Recording(Sampler):
        Options = dict

        def generate(self, prompts, params):
            self.texts = real.generate(prompts, params)
            return self.texts

    requests = []
    for question in questions:
        wrong = next(label for label in question.labels if label != question.answer)
        sample = Sample(question=question, text="", answer=wrong,
                        instruction="Answer with one letter.", input=question.stem)
        requests.append(Request(sample, question.answer, 3))
    recording = Recording()
    params = SamplingParams(n=3, temperature=0.9, max_tokens=32, seed=0)
    kept = regenerate(requests, recording, params, DEFAULT_CHAIN)
    assert len(recording.texts) == 2 and all(len(t) == 3 for t in recording.texts)
    expected = []
    for request, texts in zip(requests, recording.texts, strict=True):
        q, hint = request.sample.question, answer_hint(request.sample.lang, request.target)
        for offset, text in enumerate(texts):
            passes = (extract_answer(text, q.lang, q.options, DEFAULT_CHAIN).answer
                      == request.target and in_language(text, q.lang)
                      and not echoes_hint(text, hint, request.target))
            if passes:
                expected.append((q.lang, 3 + offset, text))
    assert [(s.lang, s.index, s.text) for s in kept] == expected
    assert all(s.answer == "B" for s in kept)  # cs-001's gold


# ---------------------------------------------------------------------------- the shares


def pair(lang: str, chosen: str, source: str = "same-language") -> PreferencePair:
    return PreferencePair(question_id="q1", lang=lang, setting="zero-shot", instruction="i",
                          input="x", chosen=chosen, rejected="r", chosen_answer="C",
                          rejected_answer="A", vote_counts={"C": 2}, chosen_sample_id="c",
                          rejected_sample_id="r", chosen_source=source)


def test_chosen_language_share_counts_english_under_zh_as_out_of_language():
    pairs = [pair("zh", "Explanation: a hospital treats the sick.\nAnswer: C", "pivot:en"),
             pair("zh", "解释: 医院治疗病人。\n答案: C", "regenerated"),
             pair("zh", "解释: 医院有医生。\n答案: C"),
             pair("fr", "Explanation: a hospital treats the sick.\nAnswer: C", "pivot:en"),
             pair("en", "Explanation: hospitals have doctors and nurses.\nAnswer: C")]
    shares = chosen_language(pairs)
    assert shares["zh"] == {"pairs": 3, "in_language": 2, "share": 2 / 3,
                            "sources": {"agreeing": 1, "pivot": 1, "regenerated": 1}}
    assert (shares["fr"]["in_language"], shares["en"]["share"]) == (0, 1.0)
    text = chosen_language_section({"chosen_fallback": "pivot", "chosen_language": shares})
    assert "| zh | 3 | 2 (66.7%) | 1 | 1 | 1 |" in text
    assert "| all | 5 | 3 (60.0%) | 2 | 2 | 1 |" in text


# ---------------------------------------------------------------------------- in a run


def test_run_regenerates_in_the_round_and_reports_the_shares(sharp_model, tmp_path):
    from tests.helpers import experiment, latest_run, run_cli, write_experiment

    data = experiment(sharp_model, tmp_path / "runs", vote__chosen_fallback="regenerate",
                      vote__regenerate_tries=2)
    path = write_experiment(tmp_path, data)
    assert run_cli(path) == 0
    folder = latest_run(tmp_path / "runs")
    stages = json.loads((folder / "manifest.json").read_text())["stages"]
    regenerated = [s for s in stages if s["stage"] == "regenerate"]
    assert [(s["label"], s["cached"]) for s in regenerated] == [("r1/train", False)]
    pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert not any(p["chosen_source"].startswith("pivot") for p in pairs)
    # The chosen texts regenerate found are kept beside the pairs that name them.
    found = [json.loads(line) for line in (folder / "regenerated.jsonl").read_text().splitlines()]
    chosen_ids = {p["chosen_sample_id"] for p in pairs if p["chosen_source"] == "regenerated"}
    assert chosen_ids <= {s["id"] for s in found}  # (the tiny model may find none)
    report = (folder / "report.md").read_text()
    assert "## Chosen responses in the prompt's language" in report
    assert "Chosen fallback: regenerate" in report
    assert run_cli(path) == 0  # a rerun reads the regenerated responses from the cache
    stages = json.loads((latest_run(tmp_path / "runs") / "manifest.json").read_text())["stages"]
    assert [s["cached"] for s in stages if s["stage"] == "regenerate"] == [True]
