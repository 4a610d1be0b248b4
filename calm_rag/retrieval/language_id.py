"""Telling a document's language: a script check for CJK text, py3langid for the rest."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import cache

from calm_rag.errors import InputError

SAMPLE_CHARS = 2000
# Below three words py3langid guesses ("Risposta: B" reads as Afrikaans, "aspirin dose" as
# Kurdish): such a text is left unidentified rather than given a wrong language.
MIN_WORDS = 3
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
UNDETERMINED = "und"


def language_code(code: str) -> str:
    """A language code as calm_rag writes it: the registry's code (``cn`` → ``zh``) when the
    language is known there, else the lower-cased code (a corpus may hold any language)."""
    from calm_rag.languages import normalize_code

    try:
        return normalize_code(code)
    except InputError:
        return str(code).strip().lower()


def detect_language(text: str) -> str:
    """The ISO 639-1 code of ``text``'s language (``"zh-hant"`` for traditional Chinese);
    ``"und"`` when it has no letters, or fewer than MIN_WORDS words outside CJK scripts (too
    short for the identifier to tell)."""
    sample = text[:SAMPLE_CHARS]
    by_script = _cjk_language(sample)
    if by_script:
        return by_script
    if len(_WORD.findall(sample)) < MIN_WORDS:
        return UNDETERMINED
    # py3langid loads its model (about a second) on first use: only for non-CJK text.
    import py3langid

    code, _ = py3langid.classify(sample)
    return language_code(code)


def written_in(text: str, code: str) -> bool:
    """Whether the identifier finds ``text`` in the language ``code`` (a registry code).

    Chinese text that no character places in one script ("答案是 B") counts as either. A
    text too short to identify ("Risposta: B") is in no language: a check that keeps texts
    in their language keeps only those it can tell.
    """
    found = detect_language(text)
    if found == code:
        return True
    chinese = {"zh", "zh-hant"}
    return found in chinese and code in chinese and _script_counts(text[:SAMPLE_CHARS]) == (0, 0)


def _cjk_language(sample: str) -> str | None:
    """Kana means Japanese and Hangul Korean; Han alone means Chinese, in one of its two
    scripts. Statistical detectors often call kanji-heavy Japanese Chinese, which the script
    settles at once.

    The text is CJK when its CJK characters, two to a word, are at least as many words as the
    other letters make: "此病人最可能為 Cushing syndrome" is Chinese with an English term in it
    (counted letter by letter, the term outweighed the Chinese).
    """
    counts: Counter[str] = Counter()
    in_word = False
    for ch in sample:
        kind = _letter_kind(ch)
        if kind == "other" and not in_word:
            counts["words"] += 1  # a run of other letters is one word
        elif kind in ("kana", "hangul", "han"):
            counts[kind] += 1
        in_word = kind == "other"
    kana, hangul, han = counts["kana"], counts["hangul"], counts["han"]
    if not kana + hangul + han or (kana + hangul + han) / 2 < counts["words"]:
        return None
    if kana:
        return "ja"
    if hangul > han:
        return "ko"
    return _chinese_script(sample)


def _letter_kind(ch: str) -> str | None:
    """kana, hangul, han, other (a letter of another script), or None (not a letter)."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "kana"
    if name.startswith("HANGUL"):
        return "hangul"
    return "han" if name.startswith("CJK") else "other"


@cache
def script_characters() -> tuple[frozenset[str], frozenset[str]]:
    """(the characters only traditional Chinese writes, those only simplified writes), from
    CC-CEDICT as hanzidentifier reads it: thousands each, where a hand-made table of frequent
    pairs left plain sentences ("我今天很高興") without a sign of either script."""
    from hanzidentifier import helpers

    traditional, simplified = helpers.TRADITIONAL_CHARACTERS, helpers.SIMPLIFIED_CHARACTERS
    return frozenset(traditional - simplified), frozenset(simplified - traditional)


def _chinese_script(sample: str) -> str:
    """``zh-hant`` for traditional Chinese, ``zh`` for simplified (and for text that gives no
    sign of either). The larger count decides: a text in one script may still hold a character
    of the other (a name, a quoted term), which hanzidentifier alone calls "mixed"."""
    traditional, simplified = _script_counts(sample)
    return "zh-hant" if traditional > simplified else "zh"


def _script_counts(sample: str) -> tuple[int, int]:
    """How many characters of ``sample`` only traditional, and only simplified, Chinese write."""
    traditional, simplified = script_characters()
    return (sum(ch in traditional for ch in sample), sum(ch in simplified for ch in sample))

