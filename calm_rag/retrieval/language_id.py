"""Telling a document's language: a script check for CJK text, py3langid for the rest."""

from __future__ import annotations

import unicodedata

from calm_rag.errors import InputError

SAMPLE_CHARS = 2000


def language_code(code: str) -> str:
    """A language code as calm_rag writes it: the registry's code (``cn`` → ``zh``) when the
    language is known there, else the lower-cased code (a corpus may hold any language)."""
    from calm_rag.languages import normalize_code

    try:
        return normalize_code(code)
    except InputError:
        return str(code).strip().lower()


def detect_language(text: str) -> str:
    """The ISO 639-1 code of ``text``'s language (``"und"`` when it has no letters)."""
    sample = text[:SAMPLE_CHARS]
    by_script = _cjk_language(sample)
    if by_script:
        return by_script
    if not any(ch.isalpha() for ch in sample):
        return "und"
    # py3langid loads its model (about a second) on first use: only for non-CJK text.
    import py3langid

    code, _ = py3langid.classify(sample)
    return language_code(code)


def _cjk_language(sample: str) -> str | None:
    """Kana means Japanese and Hangul Korean; Han alone means Chinese. Statistical detectors
    often call kanji-heavy Japanese Chinese, which the script settles at once."""
    han = kana = hangul = letters = 0
    for ch in sample:
        if not ch.isalpha():
            continue
        letters += 1
        name = unicodedata.name(ch, "")
        if name.startswith(("HIRAGANA", "KATAKANA")):
            kana += 1
        elif name.startswith("HANGUL"):
            hangul += 1
        elif name.startswith("CJK"):
            han += 1
    if not letters or (han + kana + hangul) < letters / 2:
        return None
    if kana:
        return "ja"
    if hangul > han:
        return "ko"
    return "zh"

