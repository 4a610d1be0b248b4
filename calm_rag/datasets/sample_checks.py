"""Checks a set of read samples must pass before it votes: text in it, ids once, languages
that line up (used by the samples reader and the CALM reader alike)."""

from __future__ import annotations

import logging
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.records import Sample

log = logging.getLogger(__name__)

Entry = tuple[Path, int, Sample]  # where a sample was read (file, line), and the sample


def check_has_text(entries: list[Entry], path: Path) -> None:
    """Samples whose responses are all empty would vote on nothing and exit as if all went
    well; say so instead."""
    if not any(sample.text.strip() for _, _, sample in entries):
        raise InputError(f"every response is empty ({len(entries)} samples, no text)",
                         path=path, hint="were the samples generated? check the 'pred' or "
                                         "'text' fields")


def check_aligned(entries: list[Entry]) -> None:
    """Sample ids are unique; each question's languages share option labels and gold."""
    first: dict[str, Sample] = {}
    seen: dict[str, tuple[Path, int]] = {}
    for path, line, sample in entries:
        if sample.id in seen:
            other, other_line = seen[sample.id]
            place = f"line {other_line}" if other == path else f"{other}:{other_line}"
            raise InputError(f"duplicate sample {sample.id!r} (also on {place}): it would be "
                             "counted twice in the vote", path=path, line=line, field="id")
        seen[sample.id] = (path, line)
        q = sample.question
        ref = first.setdefault(q.id, sample).question
        for field, mine, theirs in (("options", q.labels, ref.labels),
                                    ("answer", q.answer, ref.answer)):
            if mine != theirs and (field == "options" or None not in (mine, theirs)):
                raise InputError(
                    f"question {q.id!r} has {field} {_show(mine)} in {q.lang} but "
                    f"{_show(theirs)} in {ref.lang}: the languages do not line up",
                    path=path, line=line, field=f"question.{field}")


def check_parallel(entries: list[Entry], path: Path) -> None:
    """Question ids that line up across languages: none lining up (2+ languages, every id in
    one language only) is refused, since the vote would then be within each language and
    look like one across them; some ids in one language only are counted in a warning.

    Partial overlap is not refused: a language whose sampling failed on some questions is
    common and its other questions still vote; an offset or per-language id shows up as a
    large count here.
    """
    langs_of: dict[str, set[str]] = {}
    for _, _, sample in entries:
        langs_of.setdefault(sample.question.id, set()).add(sample.lang)
    langs = sorted(set().union(*langs_of.values()))
    if len(langs) < 2:
        return
    alone = [qid for qid, found in langs_of.items() if len(found) == 1]
    if len(alone) == len(langs_of):
        raise InputError(
            f"no question id appears in more than one language ({len(langs_of)} ids over "
            f"{', '.join(langs)}, e.g. {alone[0]!r} only in {_only(langs_of, alone[0])}): "
            "nothing would be voted across languages", path=path, field="question.id",
            hint="a question's id must be the same in every language: its parallel id")
    if alone:
        log.warning("%s: %d of %d questions are in one language only (e.g. %r only in %s): "
                    "they vote within that language, not across languages; check that "
                    "question ids are parallel across languages", path, len(alone),
                    len(langs_of), alone[0], _only(langs_of, alone[0]))


def _only(langs_of: dict[str, set[str]], qid: str) -> str:
    return next(iter(langs_of[qid]))


def _show(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else repr(value)
