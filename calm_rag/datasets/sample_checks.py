"""Checks a set of read samples must pass before it votes: text in it, ids once, languages
that line up (used by the samples reader and the CALM reader alike)."""

from __future__ import annotations

from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.records import Sample

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


def _show(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else repr(value)
