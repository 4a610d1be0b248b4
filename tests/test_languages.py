from __future__ import annotations

import pytest

from calm_rag.errors import InputError
from calm_rag.languages import LANGUAGES, get_language, instruction_for, normalize_code

XCSQA = (
    "en",
    "zh",
    "de",
    "es",
    "fr",
    "it",
    "ja",
    "nl",
    "pl",
    "pt",
    "ru",
    "ar",
    "vi",
    "hi",
    "sw",
    "ur",
)


def test_every_xcsqa_language_is_registered():
    assert set(XCSQA) <= set(LANGUAGES)
    assert all(code == lang.code for code, lang in LANGUAGES.items())


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_entry_is_complete(code):
    lang = LANGUAGES[code]
    assert lang.name and lang.native_name and lang.question_marker
    assert lang.explanation_markers and all(lang.explanation_markers)
    assert lang.answer_markers
    assert all(m.rstrip().endswith((":", "：")) for m in lang.answer_markers)
    assert all(alias == alias.lower() for alias in lang.aliases)


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_instruction_has_placeholder_and_canonical_format(code):
    lang = LANGUAGES[code]
    assert lang.instruction.count("{letters}") == 1
    assert lang.explanation_markers[0] in lang.instruction
    assert lang.answer_markers[0] in lang.instruction
    # The format block comes last: explanation line, then answer line.
    last_lines = lang.instruction.splitlines()[-2:]
    assert last_lines[0].startswith(lang.explanation_markers[0])
    assert last_lines[1].startswith(lang.answer_markers[0])


@pytest.mark.parametrize(
    ("code", "markers"),
    [
        ("en", ["Answer:"]),
        ("zh", ["答案:", "答案："]),
        ("ja", ["答え:", "回答:", "答え："]),
        ("fr", ["Réponse:", "Réponse :"]),
        ("de", ["Antwort:"]),
        ("it", ["Risposta:"]),
    ],
)
def test_calm_answer_markers_are_known(code, markers):
    assert LANGUAGES[code].answer_markers[0] == markers[0]  # CALM's prompts show this one
    assert set(markers) <= set(LANGUAGES[code].answer_markers)


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("en", "en"),
        ("EN", "en"),
        (" de ", "de"),
        ("cn", "zh"),
        ("zh-CN", "zh"),
        ("zh_tw", "zh-hant"),  # traditional Chinese is a language of its own
        ("zh-Hant", "zh-hant"),
        ("zh-Hant-MO", "zh-hant"),  # an unlisted region of a listed script tag
        ("zh-Hans", "zh"),
        ("Chinese", "zh"),
        ("jap", "ja"),
        ("jp", "ja"),
        ("japanese", "ja"),
        ("pt-BR", "pt"),
        ("es-MX", "es"),  # an unlisted region still names its language
        ("français", "fr"),
    ],
)
def test_normalize_code_accepts_codes_aliases_and_names(given, code):
    assert normalize_code(given) == code
    assert get_language(given) is LANGUAGES[code]


@pytest.mark.parametrize("bad", ["xx", "", "klingon", "zz-cn"])
def test_unknown_code_says_what_is_known(bad):
    with pytest.raises(InputError) as caught:
        normalize_code(bad)
    err = caught.value
    assert err.field == "lang"
    assert err.hint == "use an ISO 639-1 code"
    assert f"unknown language code {bad!r}; known: en, zh, de" in err.message
    assert "ur" in err.message


def test_aliases_name_one_language_each():
    seen: dict[str, str] = {}
    for lang in LANGUAGES.values():
        for alias in (lang.code, *lang.aliases):
            assert seen.setdefault(alias, lang.code) == lang.code, alias


@pytest.mark.parametrize(
    ("code", "labels", "letters"),
    [
        ("en", "ABCDE", "A, B, C, D or E"),
        ("en", "AB", "A or B"),
        ("en", "A", "A"),
        ("zh", "ABCD", "A、B、C 或 D"),
        ("ja", "ABC", "A、BまたはC"),
        ("de", "ABC", "A, B oder C"),
        ("fr", "ABC", "A, B ou C"),
        ("ar", "ABC", "A، B أو C"),
        ("sw", "ABC", "A, B au C"),
    ],
)
def test_instruction_for_fills_localized_letters(code, labels, letters):
    text = instruction_for(code, list(labels))
    assert letters in text
    assert "{letters}" not in text


def test_instruction_for_accepts_aliases():
    assert instruction_for("cn", "AB") == instruction_for("zh", "AB")
