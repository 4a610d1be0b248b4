from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest

from calm_rag.errors import InputError
from calm_rag.languages import LANGUAGES, get_language
from calm_rag.records import Question, Sample
from calm_rag.registry import RegistryError
from calm_rag.vote.answers import (
    AMBIGUOUS,
    CALM_CHAIN,
    DEFAULT_CHAIN,
    EXTRACTORS,
    Extraction,
    extract_answer,
    extract_samples,
    extraction_rates,
    register_extractor,
)

OPTIONS = {"A": "town", "B": "school", "C": "hospital", "D": "office", "E": "office building"}


def read(text: str, lang: str = "en", options: dict[str, str] = OPTIONS, **kw) -> Extraction:
    return extract_answer(text, lang, options, **kw)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Explanation: kids fall.\nAnswer: B", "en"),
        ("Answer: (B)", "en"),
        ("Answer: B.", "en"),
        ("Answer: B)", "en"),
        ("Answer: **B**", "en"),
        ("**Answer:** B", "en"),
        ("**Answer**: B", "en"),
        ("Answer: <B>", "en"),
        ("Answer: [B]", "en"),
        ("Answer: B. school", "en"),
        ("Answer: B. school\n\nBecause children play rough, A and C are less likely.", "en"),
        ("Answer:\nB", "en"),
        ("Answer:\n\n  B. school", "en"),
        ("answer: B", "en"),
        ("The correct answer: B", "en"),
        ("Answer: Ｂ", "en"),
        ("Answer：B", "en"),
        ("Answer : B", "en"),
        ("答案：Ｂ", "zh"),
        ("解释:孩子们经常摔倒。\n\n答案:B. 学校", "zh"),
        ("答案:B。", "zh"),
        ("答え:<B>", "ja"),
        ("回答：B", "ja"),
        ("答え: B. 学校", "ja"),
        ("Réponse : B", "fr"),
        ("Réponse: B. école, car les enfants jouent.", "fr"),
        ("Antwort: B. Schule", "de"),
        ("Antwort:<B. Schule>", "de"),
        ("Risposta: B", "it"),
        ("Risposta: B (scuola)", "it"),
        ("Ответ: B", "ru"),
        ("الإجابة: B", "ar"),
        ("Đáp án: B", "vi"),
        ("उत्तर: B", "hi"),
        ("Jibu: B", "sw"),
        ("جواب: B", "ur"),
    ],
)
def test_marker_letter_reads_the_many_shapes_of_an_answer(text, lang):
    assert read(text, lang) == Extraction("B", "marker_letter")


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_language_reads_its_own_output_format(code):
    lang = get_language(code)
    text = f"{lang.explanation_markers[0]} ...\n{lang.answer_markers[0]} C"
    assert read(text, code) == Extraction("C", "marker_letter")


@pytest.mark.parametrize(
    ("text", "lang", "answer"),
    [
        ("Answer: A\n\nOn reflection the first was wrong.\nAnswer: C", "en", "C"),  # the last one
        ("説明: 学校です。\nAnswer: B", "ja", "B"),  # another language's marker
        ("答え: B\n(Answer: C would be the English reading)", "ja", "B"),  # own marker first
        ("答え:E. office building\nAnswer:\n答え:", "ja", "E"),  # an empty echoed slot
        ("Antwort:D. office\nAnswer:\nAntwort:", "de", "D"),
        ("Réponse: D. pack (A traveler's pack)", "fr", "D"),  # "(A traveler" is prose
        ("Answer: B. school, because A is too far", "en", "B"),
        ("Answer: B\nC is wrong", "en", "B"),  # only the answer's own line can conflict
        ("Answer: B or B", "en", "B"),
    ],
)
def test_marker_letter_finds_the_right_answer(text, lang, answer):
    assert read(text, lang) == Extraction(answer, "marker_letter")


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Answer: F", "en"),  # not an option label
        ("Antwort: Das ist unklar.", "de"),  # "Das" is not D
        ("Réponse: C'est difficile à dire.", "fr"),  # "C'est" is not C
        ("Réponse: Aucune des options.", "fr"),  # "Aucune" is not A
        ("Answer: None of the above (A-E)", "en"),
        ("I cannot answer this question. Can I help you with something else?", "en"),
        ("説明:B. 学校\n\nそれが理由です。", "ja"),  # an explanation is not an answer
        ("答案:BC", "zh"),
        ("", "en"),
    ],
)
def test_unreadable_responses_are_not_guessed(text, lang):
    assert read(text, lang) == Extraction(None, "none")


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Answer: A or C", "en"),
        ("Answer: A/C", "en"),
        ("Answer: A, C", "en"),
        ("Answer: (A) and (C)", "en"),
        ("Answer: A. town or C. hospital", "en"),
        ("Answer: A (town) or C (hospital)", "en"),
        ("Risposta: C e E", "it"),
        ("Réponse: A ou C", "fr"),
        ("答案:A 或 E", "zh"),
        ("答案:C或E", "zh"),
        ("答案:A、B、C (所有三个选项都是正确的)", "zh"),
        ("答え: A E", "ja"),
        ("答え: A. 町 D. 事務所", "ja"),
        ("答え:D. 事務所/E. オフィスビル", "ja"),
        ("Answer: town or school", "en"),  # two option texts
    ],
)
def test_conflicting_letters_are_ambiguous(text, lang):
    assert read(text, lang) == Extraction(None, "ambiguous")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Answer: hospital", "C"),
        ("Answer: **Hospital**", "C"),
        ("Answer: hospital, since injuries are treated there.", "C"),
        ("Answer: office building", "E"),  # the longer option, not "office"
        ("Answer: office", "D"),
        ("Answer:\nschool.", "B"),
    ],
)
def test_marker_text_matches_one_option(text, answer):
    assert read(text) == Extraction(answer, "marker_text")


def test_marker_text_ignores_options_named_in_passing():
    text = (
        "Réponse: Aucune ne convient, il est donc improbable que l'option A (town) soit correcte."
    )
    assert read(text, "fr").answer is None


@pytest.mark.parametrize("text", ["B", " (B) ", "**B.**", "Ｂ", "B\n"])
def test_lone_letter(text):
    assert read(text) == Extraction("B", "lone_letter")


def test_options_decide_which_letters_count():
    assert read("Answer: E", options={"A": "x", "B": "y"}).answer is None
    assert read("Answer: 2", options={"1": "x", "2": "y"}) == Extraction("2", "marker_letter")


def test_chain_order_and_choice():
    assert read("Answer: B", chain=("lone_letter",)) == Extraction(None, "none")
    assert read("B", chain=("marker_letter", "lone_letter")) == Extraction("B", "lone_letter")
    assert DEFAULT_CHAIN == ("marker_letter", "marker_text", "option_line", "lone_letter")
    assert all(name in EXTRACTORS for name in DEFAULT_CHAIN + CALM_CHAIN)


def test_unknown_extractor_is_an_input_error():
    with pytest.raises(InputError) as caught:
        read("Answer: B", chain=("marker_letter", "regex_magic"))
    assert caught.value.field == "chain"
    assert "unknown extractor 'regex_magic'" in caught.value.message


def test_language_may_be_an_alias_or_a_language():
    assert (
        read("答案:B", "cn")
        == read("答案:B", get_language("zh"))
        == Extraction("B", "marker_letter")
    )


def test_register_extractor(monkeypatch):
    monkeypatch.setattr(EXTRACTORS, "_items", dict(EXTRACTORS._items))  # forgotten afterwards

    @register_extractor("always_d")
    def always_d(text, lang, options):
        return "D"

    @register_extractor("undecided")
    def undecided(text, lang, options):
        return AMBIGUOUS

    assert read("nothing", chain=("marker_letter", "always_d")) == Extraction("D", "always_d")
    assert read("nothing", chain=("undecided", "always_d")) == Extraction(None, "ambiguous")
    with pytest.raises(RegistryError, match="already registered"):
        register_extractor("always_d")(lambda text, lang, options: "A")
    with pytest.raises(RegistryError, match="3 positional arguments"):
        register_extractor("wrong_shape")(lambda text: "A")


@pytest.mark.parametrize(
    ("text", "lang", "answer"),
    [
        ("Réponse: Aucune des options.", "fr", "A"),  # the word's first letter
        ("Antwort: Es gibt keine gute Antwort!", "de", "E"),
        ("Erläuterung:\n\nDie richtige Antwort ist C.", "de", "E"),  # no marker: first char
        ("Explication: trop court", "fr", "E"),
        ("答案:BC", "zh", "C"),  # the second character is read first
        ("Answer: A or C", "en", "A"),
        ("答案:A、B、C", "zh", "A"),
        ("回答:<A>", "ja", None),  # only the canonical marker counts
        ("答え:<B>", "ja", "B"),
        ("Antwort:<B. Schule>", "de", "B"),
        ("Answer: A. town\n\nCorrect answer: B. school", "en", "A"),
        ("I cannot answer that.", "en", None),
        ("答え:E. office building\nAnswer:\n答え:", "ja", None),
    ],
)
def test_calm_first_char_reproduces_calm_quirks(text, lang, answer):
    assert read(text, lang, chain=CALM_CHAIN).answer == answer


def test_extraction_rates():
    pairs = [("en", True), ("en", False), ("zh", True), ("en", True)]
    assert extraction_rates(pairs) == {"en": pytest.approx(2 / 3), "zh": 1.0}
    assert extraction_rates([]) == {}


# --- CALM's released data --------------------------------------------------------------------

VOTE_ORDER = ("ja", "fr", "it", "cn", "de", "en")
RELEASED = {"cn": 913, "fr": 611, "de": 739, "it": 693, "ja": 920}


def _options(prompt_input: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r"^([A-E])\. ?(.*)$", prompt_input, re.MULTILINE)}


def _samples(root, lang):
    return json.loads((root / "samples" / f"x_csqa_{lang}_train_sampled.json").read_text())


def test_calm_chain_rebuilds_every_released_pair(calm_reference):
    """Pooled vote (ties to the first seen in ja, fr, it, cn, de, en), unparsed responses
    ignored, each disagreeing response one row: exactly CALM's 3,876 rejected rows."""
    samples = {lang: _samples(calm_reference, lang) for lang in VOTE_ORDER}
    letters = {
        lang: [
            [read(p, lang, _options(s["input"]), chain=CALM_CHAIN).answer for p in s["pred"]]
            for s in rows
        ]
        for lang, rows in samples.items()
    }
    for lang, n_rows in RELEASED.items():
        released = json.loads((calm_reference / "train" / "dpo" / f"DPO_{lang}.json").read_text())
        assert len(released) == n_rows
        where = {p: i for i, s in enumerate(samples[lang]) for p in s["pred"]}
        want: dict[int, Counter] = defaultdict(Counter)
        for row in released:
            i = where[row["rejected"]]
            chosen = read(row["chosen"], lang, _options(samples[lang][i]["input"])).answer
            want[i][(row["rejected"], chosen)] += 1
        for i, s in enumerate(samples[lang]):
            votes = Counter(a for code in VOTE_ORDER for a in letters[code][i] if a is not None)
            majority = votes.most_common(1)[0][0]
            got = Counter(
                (p, majority)
                for p, a in zip(s["pred"], letters[lang][i], strict=True)
                if a is not None and a != majority
            )
            assert got == want[i], (lang, i)


def test_default_chain_reads_most_released_samples(calm_reference):
    for lang in ("en", "cn", "fr", "de", "it", "ja"):
        pairs = [
            (lang, read(p, lang, _options(s["input"])).answer is not None)
            for s in _samples(calm_reference, lang)
            for p in s["pred"]
        ]
        assert extraction_rates(pairs)[lang] > 0.97, lang


def test_extract_samples_fills_only_what_is_missing():
    question = Question(id="q1", lang="fr", stem="?", options=OPTIONS)
    fresh = Sample(question=question, text="Réponse : C. hôpital")
    done = Sample(question=question, text="Réponse: A", answer="B", extraction="manual", index=1)
    blank = Sample(question=question, text="Je ne sais pas.", index=2)
    out = extract_samples([fresh, done, blank])
    assert [(s.answer, s.extraction) for s in out] == [
        ("C", "marker_letter"),
        ("B", "manual"),
        (None, "none"),
    ]
    calm = Sample(question=question, text="Réponse: C. hôpital")
    assert extract_samples([calm], chain=CALM_CHAIN)[0].extraction == "calm_first_char"


OPTIONS_ZH = {"A": "β细胞", "B": "α细胞", "C": "δ细胞", "D": "腺泡细胞"}


@pytest.mark.parametrize(("text", "expected"), [
    ("D. 腺泡细胞", Extraction("D", "option_line")),
    ("**D)** 腺泡细胞\n因为……", Extraction("D", "option_line")),
    ("D. 腺泡细胞\n\n解释：D. 腺泡细胞分泌消化酶", Extraction("D", "option_line")),
    ("A. β细胞\nD. 腺泡细胞", Extraction(None, "ambiguous")),
    ("D. 某种细胞", Extraction(None, "none")),  # a letter with another option's text: no guess
    ("答案：A\nD. 腺泡细胞", Extraction("A", "marker_letter")),
])
def test_option_line_reads_a_restated_option_without_a_marker(text, expected):
    assert extract_answer(text, "zh", OPTIONS_ZH) == expected
