"""Whether the ``chosen`` responses DPO trains on are in the prompt's language.

``chosen_fallback: pivot`` gives a language with no agreeing response the pivot's (English)
text, so DPO learns to answer, say, Chinese prompts in English; ``regenerate`` samples the
language again. This counts, per prompt language, the pair rows whose chosen text the language
identifier finds in that language, and where the chosen texts came from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from calm_rag.records import PreferencePair

SOURCES = ("agreeing", "pivot", "regenerated")
"""Where a chosen response came from, as the report names it: one of the language's own
responses agreeing with the target, a borrowed (pivot) one, or a regenerated one."""


def source_name(chosen_source: str) -> str:
    """A pair's ``chosen_source`` as one of SOURCES (``pivot:en`` is ``pivot``); a plugin's
    own source is kept as it is."""
    if chosen_source == "same-language":
        return "agreeing"
    return chosen_source.split(":", 1)[0]


def chosen_language(pairs: Iterable[PreferencePair],
                    written_in: Callable[[str, str], bool] | None = None) -> dict[str, dict]:
    """Per prompt language (a pair's ``lang``): pair rows, rows whose chosen text is in that
    language (``written_in``, the language identifier's, by default), their share, and the
    rows per chosen source."""
    from calm_rag.retrieval import language_id

    identify = written_in or language_id.written_in
    rows: dict[str, Counter[str]] = {}
    sources: dict[str, Counter[str]] = {}
    seen: dict[tuple[str, str], bool] = {}  # a chosen text repeats over rows: identify it once
    for pair in pairs:
        if (pair.chosen, pair.lang) not in seen:
            seen[pair.chosen, pair.lang] = identify(pair.chosen, pair.lang)
        counts = rows.setdefault(pair.lang, Counter())
        counts["pairs"] += 1
        counts["in_language"] += seen[pair.chosen, pair.lang]
        sources.setdefault(pair.lang, Counter())[source_name(pair.chosen_source)] += 1
    return {lang: {"pairs": c["pairs"], "in_language": c["in_language"],
                   "share": c["in_language"] / c["pairs"],
                   "sources": {name: sources[lang][name] for name in
                               [*SOURCES, *sorted(set(sources[lang]) - set(SOURCES))]}}
            for lang, c in sorted(rows.items())}
