"""Prompts in the question's own language: instruction, optional context, question, options.

Everything localized comes from the language registry (:mod:`calm_rag.languages`) or from the
one table below, so a new language needs no code here.
"""

from __future__ import annotations

from collections.abc import Sequence

from calm_rag.languages import get_language, instruction_for
from calm_rag.records import Question


def context_heading(code: str) -> str:
    """The localized heading above retrieved passages (``Language.context_heading``)."""
    return get_language(code).context_heading


def format_context(code: str, passages: Sequence[str]) -> str:
    """Numbered passages under the localized heading ("Context:\\n[1] ...\\n[2] ...")."""
    lines = [context_heading(code)]
    lines += [f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, start=1)]
    return "\n".join(lines)


def format_question(question: Question) -> str:
    """The localized question marker, the stem and one "A. text" line per option."""
    marker = get_language(question.lang).question_marker
    lines = [f"{marker} {question.stem.strip()}"]
    lines += [f"{label}. {text.strip()}" for label, text in question.options.items()]
    return "\n".join(lines)


def prompt_fields(question: Question, passages: Sequence[str] | None = None) -> tuple[str, str]:
    """``(instruction, input)`` as a Sample and an Alpaca/LLaMA-Factory row record them."""
    instruction = instruction_for(question.lang, question.labels)
    parts = [format_context(question.lang, passages)] if passages else []
    parts.append(format_question(question))
    return instruction, "\n\n".join(parts)


def messages_from_fields(instruction: str, input: str) -> list[dict[str, str]]:
    """The chat for a recorded ``(instruction, input)``: one user turn, instruction first.

    Training rebuilds prompts from the recorded fields through this same function, so what DPO
    sees is exactly what the generator was asked. Instruction and input form one user turn, as
    in CALM's Alpaca rows; the model keeps its own system prompt (SmolLM2-135M followed the
    format no better with the instruction as the system turn).
    """
    return [{"role": "user", "content": f"{instruction}\n\n{input}"}]


def build_messages(question: Question, passages: Sequence[str] | None = None
                   ) -> list[dict[str, str]]:
    """The chat messages that ask ``question`` (with ``passages`` as context, if any)."""
    return messages_from_fields(*prompt_fields(question, passages))
