"""X-CSQA jsonl: ``id`` shared across languages, ``lang``, ``question.stem``,
``question.choices[{label, text}]`` and ``answerKey`` (absent on the test split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import read_jsonl
from calm_rag.languages import normalize_code
from calm_rag.records import Question


def read_xcsqa(path: str | Path, lang: str | None = None, source: str = "xcsqa") -> list[Question]:
    """Read an X-CSQA jsonl file; ``lang`` overrides a missing ``lang`` field."""
    path = Path(path)
    return [_question(obj, lang, source, path, line) for line, obj in read_jsonl(path)]


def _question(obj: dict, lang: str | None, source: str, path: Path, line: int) -> Question:
    where: dict[str, Any] = {"path": path, "line": line}
    if "id" not in obj:
        raise InputError("missing", field="id", **where)
    question = obj.get("question")
    if not isinstance(question, dict) or not isinstance(question.get("stem"), str):
        raise InputError("missing or not a string", field="question.stem", **where)
    choices = question.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InputError("missing or empty list", field="question.choices", **where)
    options = {}
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict) or "label" not in choice or "text" not in choice:
            raise InputError("each choice needs 'label' and 'text'",
                             field=f"question.choices[{i}]", **where)
        options[str(choice["label"])] = str(choice["text"])
    code = obj.get("lang", lang)
    if code is None:
        raise InputError("missing", field="lang", hint="or pass lang=", **where)
    try:
        code = normalize_code(code)
    except InputError as err:
        raise err.at(**where) from None
    answer = obj.get("answerKey") or None
    if answer is not None and answer not in options:
        raise InputError(f"answer letter {answer!r} is outside the options {', '.join(options)}",
                         field="answerKey", **where)
    return Question(id=str(obj["id"]), lang=code, stem=question["stem"], options=options,
                    answer=answer, source=source)


def write_xcsqa(questions: list[Question]) -> list[dict]:
    """X-CSQA rows for questions (the inverse of :func:`read_xcsqa`)."""
    rows = []
    for q in questions:
        row = {
            "id": q.id,
            "lang": q.lang,
            "question": {"stem": q.stem,
                         "choices": [{"label": k, "text": v} for k, v in q.options.items()]},
        }
        if q.answer is not None:
            row["answerKey"] = q.answer
        rows.append(row)
    return rows
