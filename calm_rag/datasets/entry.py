"""A question source written as data: where the rows are and which columns hold what.

A :class:`DatasetEntry` is what ``data.source`` names (the built-in ones are in
:mod:`calm_rag.datasets.builtin`) or what an experiment writes under ``data.entry``. Rows come
from local files (``jsonl``, ``json`` arrays) or from ``datasets.load_dataset`` (``hub``); each
row becomes a :class:`Question` through the column mapping, and every language is then checked
to line up with the others (:mod:`calm_rag.datasets.lineup`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calm_rag.datasets.lineup import Rows, align
from calm_rag.errors import InputError
from calm_rag.io import expect, json_type, read_json_array, read_jsonl
from calm_rag.records import Question

# "(A) text", "A. text", "A) text", "A: text": CALM's Alpaca inputs and most MCQ prompts.
_INLINE_OPTION = re.compile(r"^\s*[(（]?([A-Z])\s*[.．)）:：]\s*(.*?)\s*$")
# A label among options that run on one line: "(A) 2小时 (B) 4小时内", "（A）", "( B )".
_RUN_LABEL = re.compile(r"[(（]\s*([A-Z])\s*[)）]")
_LEADING_LETTER = re.compile(r"^\s*[(（]?([A-Za-z])\s*(?:[.．)）:：]|$)")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetEntry:
    """One benchmark: its loader, its file or hub layout, its columns and its languages."""

    loader: Literal["jsonl", "json", "hub"] = "jsonl"
    """``jsonl`` (one JSON object a line), ``json`` (a JSON array, as CALM's Alpaca files) or
    ``hub`` (``datasets.load_dataset``; ``data.path`` may point at a local copy instead)."""
    path: str | None = None
    """Local files: one file per language, ``{lang}`` standing for the language's code in the
    release (see ``codes``); relative to ``data.path`` when that is a folder."""
    name: str | None = None
    """For ``hub``: the dataset id (``openai/MMMLU``)."""
    config: str | None = None
    """For ``hub``: the configuration, ``{lang}`` standing for the release's language code."""
    split: str = "test"
    """For ``hub``: the split read."""
    revision: str | None = None
    """For ``hub``: a commit, tag or branch, so the questions cannot change under a run."""
    codes: dict[str, str] = field(default_factory=dict)
    """Our language code → the release's (``ja: jap``, ``zh: cn``, ``fr: FR_FR``); a language
    not listed uses our code."""
    layouts: dict[str, dict[str, str]] = field(default_factory=dict)
    """For a release whose files are named after the language its questions were written in
    (CALM's MedQA: ``all_test_native_en.json`` or ``testset_native_cn.json`` with their
    translations): that native language → the ``codes`` of its folder. The folder at
    ``data.path`` says which: the layout whose native file is there is read (``codes`` is then
    not used), and its native language is the pivot, read first and the one the others are
    checked against, wherever ``data.languages`` lists it."""
    only: tuple[str, ...] = ()
    """The languages the source has (empty: any whose file or config exists)."""
    id: str | None = None
    """The column of the id shared by a question's translations (dotted for nested fields,
    ``question.id``); none: rows are numbered by position."""
    parallel: Literal["id", "position", "none"] = "position"
    """How languages line up: by the ``id`` column, by row position (row counts, gold answers
    and option counts are then compared), or ``none`` (different question sets per language:
    asking for more than one language is refused)."""
    stem: str = "question"
    """The column of the question text (dotted for nested fields: ``question.stem``)."""
    options: tuple[str, ...] = ("options",)
    """One column holding every option (a ``{A: text}`` mapping, a list of ``{label, text}`` or
    ``{key, value}``, or ``{label: [...], text: [...]}``), or one column per option, labelled
    A, B, C, ... in order (``[A, B, C, D]``, ``[option_a, option_b, ...]``)."""
    options_in_stem: bool = False
    """The options are in the stem (CALM's files): its last lines, ``(A) text`` or
    ``A. text``, or run on one line, ``... (A) 2小时 (B) 4小时内`` (full-width ``（A）`` too);
    ``options`` is then ignored."""
    answer: str | None = "answer"
    """The column of the gold answer: a letter, a 0-based index, an option's text, or
    ``(D) text`` as CALM writes it; none: no gold."""
    description: str = ""
    """One line on what this is, for ``--describe`` and ``--check``."""

    def __post_init__(self) -> None:
        if self.loader == "hub" and not self.name:
            raise InputError("a hub entry needs the dataset id", field="name")
        if self.parallel == "id" and not self.id:
            raise InputError("parallel: id needs the id column", field="id")
        if not self.options and not self.options_in_stem:
            raise InputError("name the option column(s)", field="options")
        if len(self.options) > len(LETTERS):
            raise InputError(f"at most {len(LETTERS)} option columns", field="options")
        for pivot, codes in self.layouts.items():
            if pivot not in codes:
                raise InputError(f"the layout of {pivot} names no file of {pivot}",
                                 field=f"layouts.{pivot}", hint=f"add {pivot}: <its code>")

    def __call__(self, data: Any, base_dir: str | Path) -> list[Question]:
        """The questions of ``data.languages`` once lined up (what ``data.source`` runs)."""

        return align(self.load(data, base_dir), self.parallel, data.misaligned).questions

    def load(self, data: Any, base_dir: str | Path) -> list[Rows]:
        """Each language's rows, unchecked across languages."""
        from calm_rag.datasets.hub import hub_rows

        if self.parallel == "none" and len(data.languages) > 1:
            raise InputError(
                f"{data.source} holds different questions in each language (not translations): "
                "they cannot vote together", field="data.languages",
                hint="ask one language, or use a parallel source")
        out = []
        rows: Iterable[tuple[int, Any]]
        for lang in data.languages:
            if self.only and lang not in self.only:
                raise InputError(f"{data.source} has no {lang} questions", field="data.languages",
                                 hint=f"it has {', '.join(self.only)}")
        pivot, codes = self.layout(data, Path(base_dir))
        for lang in pivot_first(data.languages, pivot):
            code = codes.get(lang, lang)
            if self.loader == "hub":
                where, rows = hub_rows(self, code, data, Path(base_dir))
            else:
                file = self.file(lang, data, Path(base_dir), codes)
                where = str(file)
                rows = read_jsonl(file) if self.loader == "jsonl" else iter(read_json_array(file))
            out.append(self.questions(lang, where, rows, data.source))
        return out

    def layout(self, data: Any, base_dir: Path) -> tuple[str | None, dict[str, str]]:
        """The pivot language and the release's codes for the files at ``data.path``: from
        ``layouts``, the one whose native file is there; else (None, ``codes``)."""
        if not self.layouts or self.loader == "hub":
            return None, self.codes
        template = self.template(data)
        found = [(pivot, codes) for pivot, codes in self.layouts.items()
                 if self.resolve(template, codes[pivot], base_dir).is_file()]
        names = " or ".join(f"{Path(template.replace('{lang}', codes[pivot])).name} (native "
                            f"{pivot})" for pivot, codes in self.layouts.items())
        if not found:
            raise InputError(f"no {data.source} files here: expected {names}",
                             path=self.resolve(template, "", base_dir).parent,
                             field="data.path", hint="point data.path at the release's folder")
        if len(found) > 1:
            raise InputError(f"holds the files of {len(found)} releases ({names}): which "
                             "language is the pivot cannot be told",
                             path=self.resolve(template, "", base_dir).parent,
                             field="data.path", hint="keep each release in a folder of its own")
        pivot, codes = found[0]
        log.info(f"{data.source}: native {pivot} files; {pivot} is the pivot")
        return pivot, codes

    def pivot(self, data: Any, base_dir: str | Path) -> str:
        """The language the others are checked against: the native language of a release with
        ``layouts``, else the first of ``data.languages``."""
        found, _ = self.layout(data, Path(base_dir))
        return found if found is not None and found in data.languages else data.languages[0]

    def template(self, data: Any) -> str:
        """Where each language's file is, ``{lang}`` standing for the release's code:
        ``data.path`` when it has ``{lang}``, else ``data.path`` joined with ``path``."""
        root = data.path
        if root and "{lang}" in root:
            return str(root)
        if self.path and root:
            return f"{root.rstrip('/')}/{self.path}"
        if self.path and not root:
            raise InputError(f"{data.source} reads local files: say where the release is",
                             field="data.path", hint=f"the folder holding {self.path}")
        raise InputError("needs one file per language", field="data.path",
                         hint="put {lang} in it, e.g. data/{lang}/test.jsonl")

    @staticmethod
    def resolve(template: str, code: str, base_dir: Path) -> Path:
        """``template`` with ``code`` for ``{lang}``, relative to ``base_dir``."""
        file = Path(template.replace("{lang}", code))
        return file if file.is_absolute() else Path(os.path.normpath(base_dir / file))

    def file(self, lang: str, data: Any, base_dir: Path,
             codes: dict[str, str] | None = None) -> Path:
        """The local file of one language: ``data.path`` (a template or the release folder)
        joined with ``path``, ``{lang}`` the release's code for ``lang`` (in ``codes``, by
        default the entry's)."""
        code = (self.codes if codes is None else codes).get(lang, lang)
        file = self.resolve(self.template(data), code, base_dir)
        if not file.is_file():
            raise InputError(f"no {data.source} file of {lang} here", path=file,
                             field="data.path", hint="check data.path and data.languages")
        return file

    def questions(self, lang: str, where: str, rows: Iterable[tuple[int, Any]],
                  source: str) -> Rows:
        questions: list[Question | None] = []
        lines, broken = [], {}
        first_error: InputError | None = None
        for index, (line, row) in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(f"expected an object, got {json_type(row)}", path=where,
                                 line=line)
            try:
                questions.append(self.question(row, lang, index, source))
            except InputError as err:
                # A badly translated row (its options or gold unreadable) is left to the
                # check across languages; a missing column is a wrong mapping: stop now.
                if self.parallel != "position" or err.field is None or err.message == "missing":
                    raise err.at(path=where, line=line) from None
                questions.append(None)
                broken[index] = f"field '{err.field}': {err.message}"
                first_error = first_error or err.at(path=where, line=line)
            lines.append(line)
        if not questions:
            raise InputError("holds no questions", path=where)
        if first_error and len(broken) == len(questions):
            raise first_error
        return Rows(lang, where, questions, lines, broken)

    def question(self, row: dict[str, Any], lang: str, index: int, source: str) -> Question:
        """One row through the column mapping."""
        stem = column(row, self.stem, str)
        if self.options_in_stem:
            stem, options = inline_options(stem)
        elif len(self.options) == 1:
            options = option_map(column(row, self.options[0], (dict, list)), self.options[0])
        else:
            options = {LETTERS[i]: str(column(row, name, (str, int, float)))
                       for i, name in enumerate(self.options)}
        qid = (str(column(row, self.id, (str, int))) if self.id
               else f"{source}-{index:05d}")
        answer = None
        if self.answer:
            value = column(row, self.answer, (str, int, type(None)))
            answer = None if value in (None, "") else gold_label(value, options, self.answer)
        return Question(id=qid, lang=lang, stem=stem, options=options, answer=answer,
                        source=source)


def pivot_first(languages: Iterable[str], pivot: str | None) -> list[str]:
    """``languages`` with ``pivot`` moved to the front (the rows checked against come first)."""
    ordered = list(languages)
    if pivot in ordered:
        ordered.remove(pivot)
        ordered.insert(0, pivot)
    return ordered


def column(row: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``row[name]`` (dotted for nested objects) with the JSON type ``kind``."""
    *parents, last = name.split(".")
    node = row
    for depth, part in enumerate(parents):
        node = expect(node, part, dict, prefix="".join(f"{p}." for p in parents[:depth]))
    prefix = ".".join(parents) + "." if parents else ""
    return expect(node, last, kind, prefix=prefix)


def option_map(value: Any, name: str) -> dict[str, str]:
    """The options of one column, in any of the layouts releases use."""
    if isinstance(value, dict) and set(value) == {"label", "text"}:  # the hub's X-CSQA
        labels, texts = value["label"], value["text"]
        if not (isinstance(labels, list) and isinstance(texts, list)) or len(labels) != len(
                texts):
            raise InputError("label and text must be lists of one length", field=name)
        return _options(zip(labels, texts, strict=True), name)
    if isinstance(value, dict):  # MedQA: {A: text}
        return _options(value.items(), name)
    pairs = []
    for i, item in enumerate(value):
        keys = ("label", "text") if isinstance(item, dict) and "label" in item else ("key",
                                                                                    "value")
        if not isinstance(item, dict) or not all(k in item for k in keys):
            raise InputError("each option needs label and text (or key and value)",
                             field=f"{name}[{i}]")
        pairs.append((item[keys[0]], item[keys[1]]))
    return _options(pairs, name)


def _options(pairs: Iterable[tuple[Any, Any]], name: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for label, text in pairs:
        if not isinstance(label, str) or not isinstance(text, str | int | float):
            raise InputError("option labels must be strings and texts plain values", field=name)
        if label in options:
            raise InputError(f"option {label} twice", field=name)
        options[label] = str(text)
    if not options:
        raise InputError("no options", field=name)
    return options


def inline_options(text: str) -> tuple[str, dict[str, str]]:
    """The stem and its options: the ``(A) ...`` / ``A. ...`` option lines at its end, or
    options that run on one line, ``... (A) 2小时 (B) 4小时内 (C) ...`` (CALM's native Chinese
    MedQA files); a trailing answer cue such as ``Answer:`` is dropped."""
    from calm_rag.datasets.calm import strip_question_marker

    lines = text.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if _INLINE_OPTION.match(line)), None)
    if first is None:  # no option lines: the options run on after the stem
        before, run_on = _options_in_line(text)
        return strip_question_marker(before), run_on
    stem = strip_question_marker("\n".join(lines[:first]).strip())
    # Lines that are not options are a broken option line (a bad translation) or the cue.
    matches = [m for line in lines[first:] if (m := _INLINE_OPTION.match(line))]
    if len(matches) == 1 and len(_label_run(matches[0].string)) > 1:
        return stem, _options_in_line(matches[0].string)[1]  # "(A) x (B) y" on its own line
    options: dict[str, str] = {}
    for match in matches:
        options.setdefault(match.group(1), match.group(2))
    return stem, options


def _label_run(text: str) -> list[re.Match[str]]:
    """The labels ``(A)``, ``(B)``, ... of options run together on one line: the longest run
    from an ``(A)`` through the next letters in order; of equal runs the last, since a stem
    may mention "(A)" before its options. Empty under two labels."""
    marks = list(_RUN_LABEL.finditer(text))
    best: list[re.Match[str]] = []
    for k, start in enumerate(marks):
        if start.group(1) != "A":
            continue
        run = [start]
        for mark in marks[k + 1 :]:
            if len(run) < len(LETTERS) and mark.group(1) == LETTERS[len(run)]:
                run.append(mark)
        if len(run) >= len(best):
            best = run
    return best if len(best) > 1 else []


def _options_in_line(text: str) -> tuple[str, dict[str, str]]:
    """The stem before a run of ``(A) x (B) y`` options and the options; the last option ends
    with its line."""
    run = _label_run(text)
    if not run:
        raise InputError("no options like '(A) ...' or 'A. ...'", field="stem")
    options = {}
    for mark, following in zip(run, [*run[1:], None], strict=True):
        end = following.start() if following else _line_end(text, mark.end())
        options[mark.group(1)] = text[mark.end() : end].strip()
    return text[: run[0].start()].strip(), options


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def gold_label(value: Any, options: dict[str, str], name: str) -> str:
    """The gold's option label from a letter, a 0-based index, ``(D) text`` or the text."""
    labels = list(options)
    if isinstance(value, int):
        if not 0 <= value < len(labels):
            raise InputError(f"index {value} is outside the {len(labels)} options", field=name)
        return labels[value]
    if value in options:
        return str(value)
    texts = [label for label, text in options.items() if text == value]
    if len(texts) == 1:
        return texts[0]
    if leading := leading_label(value, options):
        return leading
    raise InputError(f"{value[:40]!r} is neither an option label ({', '.join(labels)}) nor an "
                     "option's text", field=name)


def leading_label(value: str, options: dict[str, str]) -> str | None:
    """The option label ``value`` opens with, as CALM writes golds: ``(D) text``, ``D. text``,
    ``（D）`` or a lone ``D``; None when it opens with none of ``options``."""
    match = _LEADING_LETTER.match(value)
    label = match.group(1).upper() if match else None
    return label if label in options else None
