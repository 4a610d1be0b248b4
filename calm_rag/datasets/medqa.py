"""MedQA jsonl: ``question``, ``options`` {letter: text}, ``answer``, ``answer_idx``, ``meta_info``.

Covers the US (4- and 5-option), Mainland and Taiwan files. MedQA has no parallel id across
languages, so a line without ``id`` gets ``<source>-<line>``; the bundled set adds ``id``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import read_jsonl
from calm_rag.languages import normalize_code
from calm_rag.records import Question

# MedQA's release names files by region, not by language; Taiwan's are traditional Chinese.
_REGION_LANGUAGE = {"us": "en", "mainland": "zh", "taiwan": "zh-hant", "tw": "zh-hant"}


def guess_medqa_language(path: Path) -> str | None:
    """The language a MedQA path implies (``questions/US/...`` → en), or None."""
    if path.parent.parent.name == "tw_translated_jsonl":  # Taiwan's translations: en/, zh/
        return normalize_code(path.parent.name)
    tail = "/".join(path.parts[-3:])  # the release's region folders sit just above the file
    for token in re.split(r"[^a-z]+", tail.lower()):
        if token in _REGION_LANGUAGE:
            return _REGION_LANGUAGE[token]
    return None


def read_medqa(path: str | Path, lang: str | None = None,
               source: str | None = None) -> list[Question]:
    """Read a MedQA jsonl file; ``lang`` defaults to what the file name implies."""
    path = Path(path)
    lang = normalize_code(lang) if lang else guess_medqa_language(path)
    if lang is None:
        raise InputError("cannot tell the language of this MedQA file", path=path,
                         hint="pass lang='en' (or --lang)")
    source = source or f"medqa-{path.stem}"
    return [_question(obj, lang, source, path, line) for line, obj in read_jsonl(path)]


def _question(obj: dict, lang: str, source: str, path: Path, line: int) -> Question:
    where: dict[str, Any] = {"path": path, "line": line}
    for key, kind in (("question", str), ("options", dict)):
        if not isinstance(obj.get(key), kind):
            raise InputError(f"missing or not a {kind.__name__}", field=key, **where)
    options = {str(k): str(v) for k, v in obj["options"].items()}
    answer = obj.get("answer_idx")
    if answer is not None and answer not in options:
        raise InputError(f"answer letter {answer!r} is outside the options {', '.join(options)}",
                         field="answer_idx", **where)
    if answer is not None and "answer" in obj and obj["answer"] != options[answer]:
        raise InputError(f"'answer' text does not match option {answer}", field="answer", **where)
    return Question(
        id=str(obj.get("id", f"{source}-{line:05d}")),
        lang=lang,
        stem=obj["question"],
        options=options,
        answer=answer,
        source=source,
    )


def write_medqa(questions: list[Question]) -> list[dict]:
    """MedQA rows for questions (the inverse of :func:`read_medqa`, keeping ``id``)."""
    return [
        {
            "id": q.id,
            "question": q.stem,
            "options": q.options,
            "answer": q.options[q.answer] if q.answer else None,
            "answer_idx": q.answer,
            "meta_info": q.source,
        }
        for q in questions
    ]
