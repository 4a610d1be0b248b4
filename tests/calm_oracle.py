"""The oracle for tests/test_calm_differential.py: CALM's reading, vote and pair choice, ported.

What the authors' ``utils/votingfunc.py`` (github.com/wangym2/CALM, commit 9d2bac4) decides, in
its own terms and nothing else: ``get_ans`` reads each response, ``get_final_ans`` votes over
the pooled answers, ``construct_DPO_data_`` picks the rejected responses. Translation, prompts and
files are left out: they decide nothing. Written independently of calm_rag (no import from it),
so the differential test compares two separate readings of the same code.

The driver that pools the six languages is not in the authors' repository: the pooling order
ja, fr, it, cn, de, en is one of the 60 orders (all with ja first) under which CALM's released
Llama pairs rebuild exactly, the same calm_rag assumes.
"""

from __future__ import annotations

from dataclasses import dataclass

# get_ans: each language splits on its own literal markers, in this order; nothing else counts.
MARKERS: dict[str, tuple[str, ...]] = {
    "cn": ("答案:", "答案："),
    "en": ("Answer:",),
    "fr": ("Réponse:", "Réponse :"),
    "it": ("Risposta:",),
    "de": ("Antwort:",),
    "ja": ("答え:", "答え："),
}
LETTERS = frozenset("ABCDE")  # get_ans's ans_list, whatever the question offers
POOL_ORDER = ("ja", "fr", "it", "cn", "de", "en")


def read(response: str, lang: str) -> str | None:
    """The answer ``get_ans`` records for one response, or None when it records nothing."""
    if lang not in MARKERS:
        return None  # no branch for the language: the answer stays ""
    tail = response
    for marker in MARKERS[lang]:
        pieces = tail.split(marker)
        tail = pieces[len(pieces) - 1].strip()
    if tail == "":
        return None
    if len(tail) == 1:
        return tail  # any single character, letter or not
    for position in (1, 0):  # the second character is looked at before the first
        if tail[position] in LETTERS:
            return tail[position]
    return None


def answers(preds: list[str] | None, lang: str) -> list[tuple[str, str]]:
    """``(answer, response)`` for every response of one item that yields an answer."""
    found = []
    for response in preds or []:  # a null pred yields nothing
        letter = read(response, lang)
        if letter is not None:
            found.append((letter, response))
    return found


def majority(pooled: list[str]) -> str | None:
    """``get_final_ans``: the most frequent answer, the one counted first on a tie."""
    if not pooled:
        return None
    tally: dict[str, int] = {}
    for letter in pooled:
        tally[letter] = tally.get(letter, 0) + 1
    best = None
    for letter, n in tally.items():  # a later answer must beat, not equal, the best so far
        if best is None or n > tally[best]:
            best = letter
    return best


@dataclass(frozen=True)
class Row:
    """What CALM decides for one DPO row."""

    item: int
    lang: str
    rejected: str
    rejected_answer: str
    chosen_answer: str


def rows(items: dict[str, list[list[str] | None]]) -> dict[str, list[Row]]:
    """CALM's DPO rows per language, in file order, from ``{lang: [pred of item i, ...]}``."""
    read_items = {lang: [answers(preds, lang) for preds in items[lang]] for lang in items}
    n_items = len(next(iter(items.values())))
    winners = []
    for i in range(n_items):
        pooled = [a for lang in POOL_ORDER if lang in read_items for a, _ in read_items[lang][i]]
        winners.append(majority(pooled))
    out: dict[str, list[Row]] = {}
    for lang, per_item in read_items.items():
        out[lang] = [
            Row(i, lang, response, letter, winners[i])
            for i, found in enumerate(per_item)
            if winners[i] is not None
            for letter, response in found
            if letter != winners[i]
        ]
    return out
