"""The check that a question's languages are the same question, run on every source.

Languages are joined by their parallel id. Rows parallel by position are compared row by row:
the row counts, each row's gold answer and option count, and a row repeating the one before
it (a duplicated row shifts everything after it). A mismatch stops with the file, the first
misaligned row and what differs; ``data.misaligned: drop`` goes on without those rows. A file
longer than the pivot by rows that repeat the row before them (CALM's Chinese MedQA file has one)
is re-synced first: the repeats are removed and the rows after them line up again. Once a file's
row count still differs, no position after its first misaligned row can be trusted, so all of
them are dropped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from calm_rag.errors import InputError
from calm_rag.records import Question

_DROP_HINT = "fix the file, or set data.misaligned: drop to go on without the misaligned rows"


@dataclass(frozen=True)
class Rows:
    """One language's rows as read: where each came from and the question it holds."""

    lang: str
    where: str
    """The file (or ``hub:name/config/split``) the rows came from."""
    questions: list[Question | None]
    """None for a row that could not be read (kept in place when rows are parallel by
    position, so the alignment check names it instead of losing every row after it)."""
    lines: list[int]
    """Each question's line in the file (its row number, from 1, for a hub split)."""
    broken: dict[int, str] = field(default_factory=dict)
    """Why each unreadable row (by position) could not be read."""


@dataclass
class Dropped:
    """Rows of one language left out, and the first of them."""

    lang: str
    rows: int
    first: str
    """``file:line: what differs``."""
    resynced: bool = False
    """The rows were duplicates removed from this language alone; its translations are kept
    and the rows after them line up again."""

    def describe(self, verb: str = "dropped") -> str:
        if self.resynced:
            done = "removed" if verb == "dropped" else "misaligned: drop removes"
            return (f"{done} {self.rows} duplicated rows of {self.lang} (the rows after them "
                    f"line up again), first {self.first}")
        return (f"{verb} {self.rows} rows of {self.lang} (and their translations), "
                f"first {self.first}")


@dataclass
class Alignment:
    """What the check kept and what it dropped."""

    questions: list[Question]
    rows: dict[str, tuple[str, int]]
    """Per language: where its rows came from and how many were read."""
    parallel: int
    """Questions present, and lining up, in every language."""
    dropped: list[Dropped] = field(default_factory=list)
    unmatched: int = 0
    """Ids missing from some language (left out of the split, as before)."""

    def summary(self, dropping: bool = True) -> list[str]:
        """Lines for ``--check``; ``dropping``: the misaligned rows are dropped (else they stop
        the run)."""
        lines = [f"  {lang}: {count} rows  {where}" for lang, (where, count) in self.rows.items()]
        verb = "dropped" if dropping else "misaligned:"
        lines += [f"  {drop.describe(verb)}" for drop in self.dropped]
        if self.unmatched:
            lines.append(f"  {self.unmatched} ids are missing from some language (not used)")
        lines.append(f"  {self.parallel} questions line up in every language")
        return lines


def align(rows: list[Rows], parallel: str, misaligned: str) -> Alignment:
    """Check ``rows`` (one per language) line up; ``misaligned``: ``stop`` or ``drop``."""
    if parallel == "id":
        return _by_id(rows, misaligned)
    return _by_position(rows, misaligned)


def _difference(mine: Question, ref: Question, ref_lang: str) -> str | None:
    if len(mine.options) != len(ref.options):
        return f"{len(mine.options)} options, but {len(ref.options)} in {ref_lang}"
    if None not in (mine.answer, ref.answer) and mine.answer != ref.answer:
        return f"gold answer {mine.answer}, but {ref.answer} in {ref_lang}"
    return None


def _repeats(rows: Rows, i: int, exact: bool = False) -> bool:
    """Row ``i`` is the row before it again (CALM's Chinese MedQA file repeats one row,
    translated twice, so the texts differ in a character or two)."""
    a, b = rows.questions[i], rows.questions[i - 1] if i else None
    if a is None or b is None or a.options != b.options:
        return False
    return a.stem == b.stem or (not exact
                                and SequenceMatcher(None, a.stem, b.stem).ratio() >= 0.9)


def _faults(r: Rows, pivot: Rows, n: int) -> dict[int, str]:
    """Row position → what is wrong with it, for one language against the pivot."""
    wrong = {}
    for i, q in enumerate(r.questions):
        ref = pivot.questions[i] if i < n else None
        if q is None:
            wrong[i] = f"unreadable: {r.broken[i]}"
        elif _repeats(r, i, exact=r is pivot) and (r is pivot or not (
                i < n and _repeats(pivot, i))):  # near-identical in the pivot too: a series
            wrong[i] = f"repeats row {i} (a duplicated row shifts every row after it)"
        elif ref is not None and r is not pivot and (why := _difference(q, ref, pivot.lang)):
            wrong[i] = why
    if len(r.questions) != len(pivot.questions):
        extra = f"{len(r.questions)} rows, but {len(pivot.questions)} in {pivot.lang}"
        wrong.setdefault(min(len(pivot.questions), len(r.questions) - 1), extra)
    return wrong


def _resync(rows: list[Rows]) -> tuple[list[Rows], list[Dropped]]:
    """Remove, from a file longer than the pivot, as many rows repeating the row before them
    as it has extra rows: what a duplicated row shifted lines up again."""
    pivot, out, removed = rows[0], [rows[0]], []
    for r in rows[1:]:
        extra = len(r.questions) - len(pivot.questions)
        repeats = [i for i in range(1, len(r.questions)) if _repeats(r, i)][:max(extra, 0)]
        if not repeats or len(repeats) < extra:
            out.append(r)
            continue
        keep = [i for i in range(len(r.questions)) if i not in set(repeats)]
        new_position = {old: new for new, old in enumerate(keep)}
        out.append(Rows(r.lang, r.where, _pivot_ids([r.questions[i] for i in keep], pivot),
                        [r.lines[i] for i in keep],
                        {new_position[i]: why for i, why in r.broken.items()
                         if i in new_position}))
        first = repeats[0]
        removed.append(Dropped(r.lang, len(repeats), f"{r.where}:{r.lines[first]}: repeats "
                               f"row {first}", resynced=True))
    return out, removed


def _pivot_ids(questions: list[Question | None], pivot: Rows) -> list[Question | None]:
    """Ids by position are the row's number: after a re-sync a row takes its new position's."""
    ids = [q.id if q else "" for q in pivot.questions]
    return [dataclasses.replace(q, id=ids[i]) if q and i < len(ids) and ids[i] else q
            for i, q in enumerate(questions)]


def _by_position(rows: list[Rows], misaligned: str) -> Alignment:
    resynced: list[Dropped] = []
    if misaligned == "drop":
        rows, resynced = _resync(rows)
    pivot, n = rows[0], min(len(r.questions) for r in rows)
    longest = max(len(r.questions) for r in rows)
    faults = {r.lang: wrong for r in rows if (wrong := _faults(r, pivot, n))}
    if faults and misaligned == "stop":
        r = min((r for r in rows if r.lang in faults), key=lambda r: min(faults[r.lang]))
        first = min(faults[r.lang])
        raise InputError(f"row {first + 1} ({r.lang}) does not line up with row {first + 1} "
                         f"of {pivot.where}: {faults[r.lang][first]}", path=r.where,
                         line=r.lines[first], hint=_DROP_HINT)
    bad: set[int] = set(range(n, longest))
    dropped = []
    for r in rows:
        if r.lang not in faults:
            continue
        wrong = faults[r.lang]
        first = min(wrong)
        # A file of another length has drifted: nothing after its first fault can be trusted.
        lost = (set(range(first, longest)) if len(r.questions) != len(pivot.questions)
                else set(wrong))
        dropped.append(Dropped(r.lang, len(lost & set(range(len(r.questions)))),
                               f"{r.where}:{r.lines[first]}: {wrong[first]}"))
        bad |= lost
    keep = [i for i in range(n) if i not in bad]
    questions = [q for r in rows for i in keep if (q := r.questions[i]) is not None]
    counts = {r.lang: (r.where, len(r.questions) + sum(d.rows for d in resynced
                                                      if d.lang == r.lang)) for r in rows}
    return Alignment(questions, counts, len(keep), resynced + dropped)


def _by_id(rows: list[Rows], misaligned: str) -> Alignment:
    # Only rows parallel by position keep unreadable rows in place; here every row was read.
    read = [[q for q in r.questions if q is not None] for r in rows]
    tables = []
    for r, qs in zip(rows, read, strict=True):
        table: dict[str, int] = {}
        for i, q in enumerate(qs):
            if q.id in table:
                raise InputError(f"id {q.id!r} twice (first on line {r.lines[table[q.id]]})",
                                 path=r.where, line=r.lines[i], field="id",
                                 hint="ids must be unique within a language")
            table[q.id] = i
        tables.append(table)
    pivot, common = rows[0], [qid for qid in tables[0] if all(qid in t for t in tables)]
    unmatched = len(set().union(*tables) - set(common))
    bad: set[str] = set()
    dropped = []
    for r, qs, table in zip(rows[1:], read[1:], tables[1:], strict=True):
        wrong = [(table[qid], why) for qid in common if (why := _difference(
            qs[table[qid]], read[0][tables[0][qid]], pivot.lang))]
        if not wrong:
            continue
        first, why = min(wrong)
        qid = qs[first].id
        if misaligned == "stop":
            raise InputError(f"question {qid!r} ({r.lang}) does not line up with {pivot.where}: "
                             f"{why}", path=r.where, line=r.lines[first], hint=_DROP_HINT)
        dropped.append(Dropped(r.lang, len(wrong), f"{r.where}:{r.lines[first]}: {why}"))
        bad |= {qs[i].id for i, _ in wrong}
    keep = {qid for qid in common if qid not in bad}
    questions = [q for qs in read for q in qs if q.id in keep]
    counts = {r.lang: (r.where, len(r.questions)) for r in rows}
    return Alignment(questions, counts, len(keep), dropped, unmatched)


def align_questions(questions: list[Question], where: str, misaligned: str) -> Alignment:
    """The check for a source that returns questions (a plugin's, the bundled sets)."""
    by_lang: dict[str, list[Question]] = {}
    for q in questions:
        by_lang.setdefault(q.lang, []).append(q)
    rows = [Rows(lang, f"{where} ({lang})", list(qs), list(range(1, len(qs) + 1)))
            for lang, qs in by_lang.items()]
    if not rows:
        raise InputError("the source gave no questions", path=where)
    return _by_id(rows, misaligned)
