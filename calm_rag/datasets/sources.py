"""Question sources by name (``data.source``): each reads an experiment's questions.

A source is ``fn(data, base_dir) -> questions``: every question in every language of
``data.languages`` (an id present in all of them is kept by the split). A new one is one
function decorated with ``@QUESTION_SOURCES.register("name")``; the shipped ones are in
``bundled.py``, ``medqa.py`` and ``xcsqa.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.records import Question


def per_language_files(data: Any, base_dir: str | Path,
                       reader: Callable[[Path, str], list[Question]]) -> list[Question]:
    """``reader(path, lang)`` over one file per language: ``data.path`` with ``{lang}`` in it,
    relative to ``base_dir`` (the experiment file's folder)."""
    if not data.path:
        raise InputError(f"data.source {data.source} needs data.path", field="data.path",
                         hint="one file per language, e.g. data/xcsqa/{lang}/dev.jsonl")
    if "{lang}" not in data.path:
        raise InputError("the path has no {lang} placeholder", field="data.path",
                         hint="e.g. data/medqa/{lang}/test.jsonl")
    questions = []
    for lang in data.languages:
        path = Path(data.path.replace("{lang}", lang))
        path = path if path.is_absolute() else Path(base_dir) / path
        if not path.is_file():
            raise InputError(f"no {data.source} file for language {lang}", path=path,
                             field="data.path", hint="check data.path and data.languages")
        questions += reader(path, lang)
    return questions
