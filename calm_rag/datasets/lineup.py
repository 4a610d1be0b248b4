"""The check that a question's languages are the same question, run on every source.

Languages are joined by their parallel id; a language none of whose ids another language has
is refused. Rows parallel by position are lined up by content, not only by position
(:mod:`calm_rag.datasets.row_match`): a row removed, inserted or repeated in one language is
found, and the rows after it line up again. Each pair is then compared: its gold answer and
option count must agree. ``data.misaligned: stop`` stops at the first problem (the file, the
row, and what differs or how the rows shift); ``drop`` goes on without it: an inserted or
repeated row is removed from its language alone, while a row missing from a language, a pair
that differs, an unreadable row, or a row that cannot be placed with confidence next to a shift
loses the question in every language. Every such row is named.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from calm_rag.datasets.row_match import Match, features, match_rows, repeats
from calm_rag.errors import InputError
from calm_rag.records import Question

_DROP_HINT = "fix the file, or set data.misaligned: drop to go on without the misaligned rows"
_SHOWN = 5
"""How many rows (or ids) a line names before it says how many more."""


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


_REMOVED = {"duplicated": "duplicated rows of {lang}",
            "inserted": "rows of {lang} that are in no other language"}
_LOST = {"missing": "rows of {pivot} missing from {lang} (and their other translations)",
         "uncertain": "rows of {lang} placed with low confidence next to a shift (and their "
                      "translations)",
         "misaligned": "rows of {lang} (and their translations)"}


@dataclass
class Dropped:
    """Rows of one language left out for one reason, the first of them and their numbers."""

    lang: str
    rows: int
    first: str
    """``file:line: what differs``."""
    resynced: bool = False
    """The rows were removed from this language alone (repeated or inserted rows); its
    translations are kept and the rows after them line up again."""
    kind: str = "misaligned"
    """``duplicated`` or ``inserted`` (removed from this language alone); ``missing`` (rows of
    the pivot this language lacks), ``uncertain`` (could not be placed next to a shift) or
    ``misaligned`` (gold, option count or an unreadable row), dropped in every language."""
    numbers: list[int] = field(default_factory=list)
    """The rows' numbers (from 1) in this language's file (the pivot's for ``missing``)."""
    pivot: str = ""

    def describe(self, verb: str = "dropped") -> str:
        """One line: how many rows, why, the first of them and the numbers of the rest."""
        if self.resynced:
            done = "removed" if verb == "dropped" else "misaligned: drop removes"
            what = _REMOVED.get(self.kind, _REMOVED["duplicated"]).format(lang=self.lang)
            text = f"{done} {self.rows} {what} (the rows after them line up again)"
        else:
            what = _LOST.get(self.kind, _LOST["misaligned"]).format(lang=self.lang,
                                                                   pivot=self.pivot)
            text = f"{verb} {self.rows} {what}"
        return f"{text}, first {self.first}{_more('rows', self.numbers)}"


def _more(label: str, names: list) -> str:
    """``; rows 3, 9, 12 and 4 more`` where there is more than one."""
    if len(names) < 2:
        return ""
    shown = ", ".join(str(n) for n in names[:_SHOWN])
    rest = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"; {label} {shown}{rest}"


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
    unmatched_ids: list[str] = field(default_factory=list)
    """The first few of them, each with the languages it is missing from."""

    def summary(self, dropping: bool = True) -> list[str]:
        """Lines for ``--check``; ``dropping``: the misaligned rows are dropped (else they stop
        the run)."""
        lines = [f"  {lang}: {count} rows  {where}" for lang, (where, count) in self.rows.items()]
        verb = "dropped" if dropping else "misaligned:"
        lines += [f"  {drop.describe(verb)}" for drop in self.dropped]
        if self.unmatched:
            lines.append(f"  {self.unmatched_line()}")
        lines.append(f"  {self.parallel} questions line up in every language")
        return lines

    def unmatched_line(self) -> str:
        """The ids missing from some language, the first few named."""
        named = ", ".join(self.unmatched_ids)
        more = (f" and {self.unmatched - len(self.unmatched_ids)} more"
                if self.unmatched > len(self.unmatched_ids) else "")
        return (f"{self.unmatched} ids are missing from some language (not used): "
                f"{named}{more}")


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


@dataclass(frozen=True)
class _Problem:
    """One row that does not line up: where it is, why, and what it costs."""

    lang: str
    kind: str
    at: int
    """The row's position in its file (where it would be, for a missing row): the first
    problem by position is the one ``misaligned: stop`` names."""
    number: int
    """The row's number as the report names it (from 1)."""
    where: str
    line: int
    why: str
    lost: int | None = None
    """The pivot position whose question it loses in every language (None: the row is
    removed from its own language alone)."""


def _pivot_problems(pivot: Rows) -> Iterator[_Problem]:
    """The pivot's own unreadable rows and exact repeats."""
    for j, q in enumerate(pivot.questions):
        why = (f"unreadable: {pivot.broken[j]}" if q is None
               else f"repeats row {j} (a duplicated row shifts every row after it)"
               if repeats(pivot.questions, j, exact=True) else None)
        if why:
            yield _Problem(pivot.lang, "misaligned", j, j + 1, pivot.where, pivot.lines[j],
                           f"row {j + 1} ({pivot.lang}): {why}", lost=j)


def _problems(r: Rows, pivot: Rows, match: Match) -> Iterator[_Problem]:
    """What does not line up between one language and the pivot, given how its rows match."""
    yield from _extra_rows(r, pivot, match)
    yield from _missing_rows(r, pivot, match)
    for j, i in enumerate(match.partner):
        if i is not None and (found := _unlike_pair(r, pivot, match, i, j)):
            kind, why = found
            yield _Problem(r.lang, kind, i, i + 1, r.where, r.lines[i], why, lost=j)


def _unlike_pair(r: Rows, pivot: Rows, match: Match, i: int, j: int) -> tuple[str, str] | None:
    """Why row ``i`` cannot stand as the translation of pivot row ``j``, if it cannot."""
    mine, ref = r.questions[i], pivot.questions[j]
    where = f"row {i + 1} ({r.lang}) does not line up with row {j + 1} of {pivot.where}"
    if mine is None:
        return "misaligned", f"{where}: unreadable: {r.broken[i]}"
    if ref is not None and (differs := _difference(mine, ref, pivot.lang)):
        return "misaligned", f"{where}: {differs}"
    # Next to a shift a pair must look alike; where nothing shifted, positions hold as before.
    if match.shifted and (not match.confident[j] or match.score[j] < 0):
        unlike = match.scorer.unlike(i, j)
        why = "; ".join(([] if match.confident[j] else ["another row fits about as well"])
                        + ([f"it {unlike}"] if unlike else [])) or "it looks unlike it"
        return "uncertain", (f"row {i + 1} ({r.lang}) cannot be placed with confidence as row "
                             f"{j + 1} of {pivot.lang}: {why}")
    return None


def _extra_rows(r: Rows, pivot: Rows, match: Match) -> Iterator[_Problem]:
    """Rows matching no pivot row: a repeat of the row before, or a row of another set."""
    last = max((i for i in match.partner if i is not None), default=-1)
    for i in match.extra:
        twice = repeats(r.questions, i)
        kind, why = (("duplicated", f"repeats row {i}") if twice
                     else ("inserted", "is in no other language"))
        why += (": the rows after it are shifted by one" if i < last
                else ": an extra row at the end")
        yield _Problem(r.lang, kind, i, i + 1, r.where, r.lines[i],
                       f"row {i + 1} ({r.lang}) {why}")


def _missing_rows(r: Rows, pivot: Rows, match: Match) -> Iterator[_Problem]:
    """Pivot rows with no translation in ``r``, named where ``r`` lacks them."""
    following = len(r.questions)  # the row of r where each missing pivot row would be
    for j in range(len(match.partner) - 1, -1, -1):
        i = match.partner[j]
        if i is not None:
            following = i
            continue
        at = min(following, len(r.questions) - 1)
        shift = ("the rows after it are shifted by one" if following < len(r.questions)
                 else f"{r.lang} ends before it")
        yield _Problem(r.lang, "missing", following, j + 1, r.where, r.lines[at],
                       f"row {j + 1} ({r.lang}) is missing (row {j + 1} of {pivot.where} "
                       f"has no translation here): {shift}", lost=j)


def _by_position(rows: list[Rows], misaligned: str) -> Alignment:
    pivot = rows[0]
    reference = [features(q) for q in pivot.questions]  # computed once for every language
    matches = {r.lang: match_rows(r.questions, pivot.questions, reference) for r in rows[1:]}
    problems = list(_pivot_problems(pivot))
    for r in rows[1:]:
        problems += _problems(r, pivot, matches[r.lang])
    if problems and misaligned == "stop":
        order = {r.lang: k for k, r in enumerate(rows)}
        first = min(problems, key=lambda p: (p.at, order[p.lang]))
        raise InputError(first.why, path=first.where, line=first.line, hint=_DROP_HINT)
    lost = {p.lost for p in problems if p.lost is not None}
    keep = [j for j in range(len(pivot.questions)) if j not in lost]
    questions = [q for q in (pivot.questions[j] for j in keep) if q is not None]
    for r in rows[1:]:
        partner = matches[r.lang].partner
        # Ids by position are the pivot row's: a row moved by a re-sync takes its partner's.
        questions += [replace(q, id=ref.id) for j in keep
                      if (i := partner[j]) is not None and (q := r.questions[i])
                      and (ref := pivot.questions[j])]
    counts = {r.lang: (r.where, len(r.questions)) for r in rows}
    return Alignment(questions, counts, len(keep), _grouped(problems, rows))


def _grouped(problems: list[_Problem], rows: list[Rows]) -> list[Dropped]:
    """One :class:`Dropped` per language and kind, removals from one language first."""
    order = {r.lang: k for k, r in enumerate(rows)}
    groups: dict[tuple[str, str], list[_Problem]] = {}
    for p in sorted(problems, key=lambda p: (order[p.lang], p.at)):
        groups.setdefault((p.lang, p.kind), []).append(p)
    dropped = [Dropped(lang, len(group), f"{group[0].where}:{group[0].line}: {group[0].why}",
                       resynced=kind in _REMOVED, kind=kind,
                       numbers=[p.number for p in group], pivot=rows[0].lang)
               for (lang, kind), group in groups.items()]
    return sorted(dropped, key=lambda d: not d.resynced)  # stable: languages keep their order


def _by_id(rows: list[Rows], misaligned: str) -> Alignment:
    # Only rows parallel by position keep unreadable rows in place; here every row was read.
    read = [[q for q in r.questions if q is not None] for r in rows]
    tables = [_id_table(r, qs) for r, qs in zip(rows, read, strict=True)]
    _refuse_disjoint(rows, tables, next((q.source for qs in read for q in qs if q.source), ""))
    pivot, common = rows[0], [qid for qid in tables[0] if all(qid in t for t in tables)]
    unmatched = set().union(*tables) - set(common)
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
    return Alignment(questions, counts, len(keep), dropped, len(unmatched),
                     _unmatched_names(rows, tables, unmatched))


def _id_table(r: Rows, questions: list[Question]) -> dict[str, int]:
    """Id → position in ``questions``; an id twice in one language is refused."""
    table: dict[str, int] = {}
    for i, q in enumerate(questions):
        if q.id in table:
            raise InputError(f"id {q.id!r} twice (first on line {r.lines[table[q.id]]})",
                             path=r.where, line=r.lines[i], field="id",
                             hint="ids must be unique within a language")
        table[q.id] = i
    return table


def _refuse_disjoint(rows: list[Rows], tables: list[dict[str, int]], source: str) -> None:
    """A language none of whose ids another language has cannot vote with them: its
    translations carry other ids (a wrong id column, or files of different sets)."""
    for k, (r, table) in enumerate(zip(rows, tables, strict=True)):
        others = set().union(*(t for m, t in enumerate(tables) if m != k))
        if len(rows) > 1 and others and table and not table.keys() & others:
            langs = ", ".join(o.lang for m, o in enumerate(rows) if m != k)
            of = f" of {source}" if source and source not in r.where else ""
            raise InputError(f"no question id{of} in {r.lang} (e.g. {next(iter(table))!r}) is "
                             f"in {langs}: its questions line up with no other language",
                             path=r.where, hint="a question's translations must share one id "
                                                "(check the id column, data.entry.id, and "
                                                "data.path)")


def _unmatched_names(rows: list[Rows], tables: list[dict[str, int]],
                     unmatched: set[str]) -> list[str]:
    """The first few ids missing from some language, in the order read, with where they are
    missing: ``'q7' (not in fr)``."""
    first: dict[str, None] = {}
    for qid in (qid for table in tables for qid in table if qid in unmatched):
        first[qid] = None
        if len(first) == _SHOWN:
            break
    def lacking(qid: str) -> str:
        return ", ".join(r.lang for r, t in zip(rows, tables, strict=True) if qid not in t)

    return [f"{qid!r} (not in {lacking(qid)})" for qid in first]


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
