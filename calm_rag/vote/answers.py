"""Answer extraction: a chain of small, named extractors that read an option label from a response.

Each extractor returns a label, ``None`` (cannot tell, let the next one try) or ``AMBIGUOUS`` (saw
conflicting labels: stop, never guess). ``extract_answer`` runs a chain of them by name, so an
experiment picks its chain in config and a new extractor is one decorated function.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache

from calm_rag.languages import LANGUAGES, Language, get_language
from calm_rag.records import Sample
from calm_rag.registries import EXTRACTOR_CHAINS, EXTRACTORS

AMBIGUOUS = object()
"""Returned by an extractor that saw two different labels where one answer belongs."""

Extractor = Callable[[str, Language, dict[str, str]], object]


@dataclass(frozen=True)
class Extraction:
    """The label read from a response and the extractor that decided it."""

    answer: str | None
    method: str
    """The deciding extractor's name, ``"ambiguous"`` or ``"none"``."""


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Register ``fn(text, lang, options) -> label | None | AMBIGUOUS`` under ``name``."""
    return EXTRACTORS.register(name)


# ---------------------------------------------------------------------------------------------
# Text helpers


def _normalize(text: str) -> str:
    # NFKC folds full-width letters and punctuation (Ｂ, ：, （）) into their ASCII forms.
    return unicodedata.normalize("NFKC", text)


# Markdown, quotes and brackets a model wraps around an answer ("**B**", "(B)", "<B>", "[B]").
_OPENERS = r"[\s*_#>\"'`“”„«»\[(<{]*"
_CLOSERS = r"[)\]>}*_\"'`“”»]*"
# After a letter, a label counts only if none of these follows ("Das" is not D, "C'est" not C).
_NOT_LABEL_END = r"(?![0-9A-Za-zÀ-ɏЀ-ӿ'’])"
# What joins two labels in "A or C", "C e E", "A/C", "A和C": one separator or one short word.
_JOINER = r"\s*(?:[,/&+;、，]|[^\W\d_]{1,4})\s*"
# Without a joiner ("A E", "A. town D. city") a second label must end there, so that
# "D. pack (A traveler's pack)" keeps D.
_LABEL_STOP = r"(?=\s*$|\s*\(|[.)\]>}*_,，、。:;/&])"


@cache
def _marker_regex(markers: tuple[str, ...]) -> re.Pattern[str]:
    """Matches any of the markers, with any spacing before the colon ("Réponse :")."""
    words = {_normalize(m).rstrip().rstrip(":").rstrip() for m in markers}
    alternatives = sorted((re.escape(w).replace(r"\ ", r"\s+") for w in words), key=len)
    # Spaces or markdown may sit before the colon: "Réponse :", "**Answer**:".
    ending = r"[^\S\n]*[*_]*[^\S\n]*:"
    return re.compile(rf"(?:{'|'.join(reversed(alternatives))}){ending}", re.IGNORECASE)


@cache
def _all_answer_markers() -> tuple[str, ...]:
    return tuple(m for lang in LANGUAGES.values() for m in lang.answer_markers)


def _after_last_marker(text: str, lang: Language) -> str | None:
    r"""The text after the last non-empty answer slot, the language's own markers first.

    Any language's marker counts (models mix languages), but a slot with nothing in it is
    skipped: responses often echo the prompt's empty slot after the real answer
    ("Answer: E. town\nAnswer:\n答え:").
    """
    found = list(_marker_regex(_all_answer_markers()).finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)]
    slots = [(m, end) for m, end in zip(found, ends, strict=False) if text[m.end() : end].strip()]
    own = _marker_regex(lang.answer_markers)
    for m, _ in reversed(slots):
        if own.fullmatch(m[0]):
            return text[m.end() :]
    return text[slots[-1][0].end() :] if slots else None


@cache
def _label_regex(labels: tuple[str, ...]) -> str:
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    return rf"(?P<label>{alternatives}){_NOT_LABEL_END}"


def _strip_option_text(tail: str, text: str) -> str:
    """``tail`` without what glosses the label: ``". town"`` (its option text) or ``" (town)"``."""
    if text.strip():
        own = re.match(rf"[.:)\]]?\s*{re.escape(_normalize(text))}", tail, re.IGNORECASE)
        tail = tail[own.end() :] if own else tail
    return re.sub(r"^\s*\([^()\n]*\)", "", tail)


def _other_label(tail: str, label: str, options: dict[str, str]) -> bool:
    """Whether the rest of the answer line names a second, different label ("A or C")."""
    tail = _strip_option_text(re.sub(rf"^{_CLOSERS}", "", tail), options[label])
    labels = _label_regex(tuple(options))
    seconds = [
        re.match(rf"{_CLOSERS}{_JOINER}{_OPENERS}{labels}", tail),
        re.match(rf"{_CLOSERS}{_OPENERS}{labels}{_LABEL_STOP}", tail),
        # Anywhere on the line, a label written as options are ("C.", "C)", "(C)").
        *re.finditer(rf"(?<![^\W_])\(?{labels}[.)](?!\S)", tail),
    ]
    return any(m is not None and m["label"] != label for m in seconds)


def _clean(span: str) -> str:
    """A span lower-cased and stripped of the markdown and punctuation around it."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", span.casefold())


# ---------------------------------------------------------------------------------------------
# Extractors


def _label_after_marker(text: str, lang: Language, options: dict[str, str]) -> tuple[str, str]:
    """The label right after the last answer marker and the rest of its line, or ``("", "")``."""
    rest = _after_last_marker(_normalize(text), lang)
    if rest is None:
        return "", ""
    match = re.match(_OPENERS + _label_regex(tuple(options)), rest)
    if match is None:
        return "", ""
    return match["label"], rest[match.end() :].split("\n", 1)[0]


@register_extractor("marker_letter")
def marker_letter(text: str, lang: Language, options: dict[str, str]) -> object:
    """The label right after the last localized answer marker ("Answer: (B)", "答案：Ｂ")."""
    label, tail = _label_after_marker(text, lang, options)
    if not label:
        return None
    return AMBIGUOUS if _other_label(tail, label, options) else label


# Latin and Cyrillic words need a boundary around them; CJK text has none to give.
_WORD = r"0-9a-zà-ɏЀ-ӿ"


def _names(span: str, text: str, *, at_start: bool = False) -> bool:
    """Whether the cleaned ``span`` names the cleaned option ``text`` as a whole word."""
    pattern = rf"(?<![{_WORD}]){re.escape(text)}(?![{_WORD}])"
    return bool(text) and bool(re.match(pattern, span) if at_start else re.search(pattern, span))


@register_extractor("marker_text")
def marker_text(text: str, lang: Language, options: dict[str, str]) -> object:
    """The option whose text opens the answer after the last marker ("Answer: schools")."""
    rest = _after_last_marker(_normalize(text), lang)
    span = next((_clean(line) for line in (rest or "").split("\n") if _clean(line)), "")
    texts = {label: _clean(_normalize(t)) for label, t in options.items()}
    opening = [label for label, t in texts.items() if _names(span, t, at_start=True)]
    if not opening:
        return None
    # "office building" wins over "office"; naming a second option later makes it ambiguous.
    longest = max(len(texts[label]) for label in opening)
    best = [label for label in opening if len(texts[label]) == longest]
    later = span[longest:]
    others = [t for label, t in texts.items() if label not in best and t not in texts[best[0]]]
    if len(best) > 1 or any(_names(later, t) for t in others):
        return AMBIGUOUS
    return best[0]


@register_extractor("lone_letter")
def lone_letter(text: str, lang: Language, options: dict[str, str]) -> object:
    """A response that is nothing but a label ("B", "(B)", "**B.**")."""
    span = re.sub(r"^[\W_]+|[\W_]+$", "", _normalize(text))
    return span if span in options else None


_OPTION_LINE = re.compile(r"^\W*?(?P<label>[A-Z])\s*[.)．:]\s*(?P<text>\S.*)$")


@register_extractor("option_line")
def option_line(text: str, lang: Language, options: dict[str, str]) -> object:
    """With no answer marker, lines that restate an option ("D. Acinar cells") name it; two
    different restated options ("A. β细胞\nD. 腺泡细胞") are a list, not an answer.

    Small models often answer this way instead of following the output format.
    """
    normalized = _normalize(text)
    if _after_last_marker(normalized, lang) is not None:
        return None  # the marker extractors had their say
    texts = {label: _clean(_normalize(t)) for label, t in options.items()}
    named = set()
    for line in normalized.splitlines():
        match = _OPTION_LINE.match(line.strip())
        if match and match["label"] in options and _names(_clean(match["text"]),
                                                          texts[match["label"]], at_start=True):
            named.add(match["label"])
    if len(named) > 1:
        return AMBIGUOUS
    return named.pop() if named else None


# CALM's own reading, after get_ans in the authors' utils/votingfunc.py (github.com/wangym2/CALM,
# commit 9d2bac4); "L36" below is that file's line 36. Each language splits on its own literal
# markers, one after the other (L34-46): no other spelling counts, "Answer :", "回答:" or
# "Antwort：" are plain text.
_CALM_MARKERS: dict[str, tuple[str, ...]] = {
    "en": ("Answer:",),  # L38
    "zh": ("答案:", "答案："),  # L36: half-width colon, then full-width
    "fr": ("Réponse:", "Réponse :"),  # L40: the only spaced marker
    "it": ("Risposta:",),  # L42
    "de": ("Antwort:",),  # L44
    "ja": ("答え:", "答え："),  # L46
}
_CALM_LETTERS = frozenset("ABCDE")  # L11: ans_list, the same whatever the question offers


@register_extractor("calm_first_char")
def calm_first_char(text: str, lang: Language, options: dict[str, str]) -> object:
    """CALM's released reading (``get_ans``), quirks included, kept only to reproduce their
    pairs: what follows the last marker, stripped of whitespace, gives its second character if
    that is A-E, else its first if that is A-E; a lone character is the answer whatever it is.

    So "Answer: X" reads as X, "答案:BC" as C, "Réponse: Aucune" as A, "Answer: **B**" as
    nothing, and a response without its marker is read from its first characters. Languages
    CALM never ran read with their first marker the same way. Do not use it for new data.
    """
    rest = text
    for marker in _CALM_MARKERS.get(lang.code, lang.answer_markers[:1]):
        # L36-46: the text after the marker's last occurrence (all of it when there is none);
        # str.strip() takes only whitespace, so "**B**" and "<B>" keep their wrapping.
        rest = rest.rpartition(marker)[2].strip()
    if len(rest) == 1:
        return rest  # L50-52: a lone character is the answer, digit, "X" or "中" alike
    # L54-60: the second character is looked at first, so "(B)" reads B but so does "AB";
    # an empty rest (L48: an echoed empty "Answer:" slot at the end) reads as nothing.
    return next((c for c in rest[1::-1] if c in _CALM_LETTERS), None)


DEFAULT_CHAIN: tuple[str, ...] = EXTRACTOR_CHAINS.register(
    "default", ("marker_letter", "marker_text", "option_line", "lone_letter"))
CALM_CHAIN: tuple[str, ...] = EXTRACTOR_CHAINS.register("calm", ("calm_first_char",))
"""Reproduces the letters behind CALM's released DPO pairs (see ``calm_first_char``)."""


def extract_answer(
    text: str,
    lang: str | Language,
    options: dict[str, str],
    chain: Sequence[str] = DEFAULT_CHAIN,
) -> Extraction:
    """Run the extractors in ``chain`` until one decides; never guess when they cannot."""
    language = lang if isinstance(lang, Language) else get_language(lang)
    extractors = [EXTRACTORS.get(name, field="chain") for name in chain]
    for name, extractor in zip(chain, extractors, strict=True):
        result = extractor(text, language, options)
        if result is AMBIGUOUS:
            return Extraction(None, "ambiguous")
        if result is not None:
            return Extraction(str(result), name)
    return Extraction(None, "none")


def extract_samples(
    samples: Iterable[Sample], chain: Sequence[str] = DEFAULT_CHAIN
) -> list[Sample]:
    """The samples with answers extracted; those extracted already are kept as they are."""
    done = []
    for sample in samples:
        if not sample.extraction:
            found = extract_answer(sample.text, sample.lang, sample.question.options, chain)
            sample = replace(sample, answer=found.answer, extraction=found.method)
        done.append(sample)
    return done


def extraction_rates(pairs: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """The share of responses parsed per language, from ``(lang, parsed)`` pairs."""
    seen: Counter[str] = Counter()
    parsed: Counter[str] = Counter()
    for lang, ok in pairs:
        seen[lang] += 1
        parsed[lang] += bool(ok)
    return {lang: parsed[lang] / seen[lang] for lang in seen}
