"""The retrieval delta: which answers change when retrieval is added, and whether for the better.

Per question and language, the language's answer (the majority of its samples) zero-shot is
compared with its answer with retrieval (``rag``) on the same question:

- ``helped``: wrong or unanswered zero-shot, right with retrieval;
- ``hurt``: right zero-shot, wrong or unanswered with retrieval;
- ``changed``: a different answer that is right neither time (wrong → other wrong, or
  unanswered ↔ answered wrong);
- ``unchanged``: the same answer (or unanswered both times).

Without a gold answer only ``changed`` and ``unchanged`` can be told apart.
"""

from __future__ import annotations

from collections.abc import Iterable

from calm_rag.evaluation.metrics import language_answer
from calm_rag.records import Sample

CLASSES = ("helped", "hurt", "changed", "unchanged")


def classify(zero_shot: str | None, rag: str | None, gold: str | None) -> str:
    """The class of one language's answer change from zero-shot to retrieval."""
    if zero_shot == rag:
        return "unchanged"
    if gold is not None and rag == gold:
        return "helped"
    if gold is not None and zero_shot == gold:
        return "hurt"
    return "changed"


def _answers(samples: Iterable[Sample]) -> dict[tuple[str, str], dict[str, list[Sample]]]:
    """Samples keyed by (question id, language), then by setting."""
    groups: dict[tuple[str, str], dict[str, list[Sample]]] = {}
    for s in samples:
        groups.setdefault((s.question.id, s.lang), {}).setdefault(s.setting, []).append(s)
    return groups


def retrieval_delta(samples: Iterable[Sample]) -> dict:
    """Counts of helped / hurt / changed / unchanged per language and overall, with the ids.

    Returns ``{}`` when the samples lack one of the two settings. Question-language pairs seen
    in one setting only are left out and counted in ``unpaired``.
    """
    groups = _answers(samples)
    if {"zero-shot", "rag"} - {setting for g in groups.values() for setting in g}:
        return {}
    overall = dict.fromkeys(CLASSES, 0)
    by_language: dict[str, dict[str, int]] = {}
    questions: dict[str, dict[str, list[str]]] = {c: {} for c in CLASSES}
    unpaired = without_gold = 0
    for (qid, lang), settings in sorted(groups.items()):
        if "zero-shot" not in settings or "rag" not in settings:
            unpaired += 1
            continue
        gold = settings["zero-shot"][0].question.answer
        without_gold += gold is None
        kind = classify(language_answer(settings["zero-shot"]),
                        language_answer(settings["rag"]), gold)
        overall[kind] += 1
        by_language.setdefault(lang, {**dict.fromkeys(CLASSES, 0), "n": 0})[kind] += 1
        by_language[lang]["n"] += 1
        questions[kind].setdefault(lang, []).append(qid)
    return {
        "n": sum(overall.values()),
        "overall": overall,
        "by_language": dict(sorted(by_language.items())),
        "questions": questions,
        "without_gold": without_gold,
        "unpaired": unpaired,
    }
