"""TRL preference rows: ``prompt``, ``chosen``, ``rejected``, standard or conversational.

Standard rows hold strings; conversational rows hold message lists, the form TRL's
DPOTrainer applies the chat template to. Either way one row holds exactly two responses.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import read_jsonl, write_jsonl
from calm_rag.records import PreferencePair

FORMS = ("standard", "conversational")


def prompt_text(instruction: str, query: str) -> str:
    """The user turn: instruction then question, as LLaMA-Factory joins Alpaca fields."""
    return "\n".join(part for part in (instruction, query) if part)


def trl_row(pair: PreferencePair, form: str = "conversational") -> dict[str, Any]:
    """One TRL row for a pair, plus provenance columns (DPOTrainer ignores extra columns)."""
    prompt = prompt_text(pair.instruction, pair.input)
    if form == "standard":
        row: dict[str, Any] = {"prompt": prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    elif form == "conversational":
        row = {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    else:
        raise InputError(f"unknown TRL form {form!r}; use one of {', '.join(FORMS)}",
                         field="form")
    row.update(question_id=pair.question_id, lang=pair.lang,
               chosen_answer=pair.chosen_answer, rejected_answer=pair.rejected_answer)
    return row


def export_trl(pairs: Iterable[PreferencePair], path: str | Path,
               form: str = "conversational") -> int:
    """Write TRL rows as JSONL (``datasets.load_dataset("json", ...)`` reads it)."""
    return write_jsonl(path, (trl_row(pair, form) for pair in pairs))


def read_trl_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read and check TRL preference rows of either form."""
    path = Path(path)
    rows = []
    for line, row in read_jsonl(path):
        form = None
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise InputError("missing", path=path, line=line, field=key)
            kind = _form_of(row[key])
            if kind is None:
                raise InputError("expected a string or a list of {role, content} messages "
                                 "whose role and content are strings",
                                 path=path, line=line, field=key)
            if form not in (None, kind):
                raise InputError("mixes standard strings and conversational messages",
                                 path=path, line=line, field=key)
            form = kind
        rows.append(row)
    return rows


def _form_of(value: Any) -> str | None:
    if isinstance(value, str):
        return "standard"
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in value
    ):
        return "conversational"
    return None
