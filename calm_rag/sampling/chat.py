"""How a chat becomes token ids, and how a recorded prompt becomes a chat again.

Sampling (every backend), the log-prob scorer and training all go through :func:`encode_chat`,
so the model reads one and the same prompt in each; and the scorer and the trainers rebuild the
chat of a recorded sample or pair through :func:`recorded_chat`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calm_rag.errors import InputError
from calm_rag.sampling.base import Messages
from calm_rag.sampling.prompts import messages_from_fields


def encode_chat(tokenizer: Any, messages: Messages,
                template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
    """Token ids of ``messages`` through the model's chat template, ready for the reply.

    ``template_kwargs`` go to the template (``sampling.chat_template_kwargs``, e.g.
    ``enable_thinking``). A model without a chat template (a base model) reads the turns'
    contents as plain text, separated by blank lines and ending in a new line.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        text = "\n\n".join(m["content"] for m in messages) + "\n"
        return list(tokenizer(text)["input_ids"])
    return list(tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True,
        **(template_kwargs or {}))["input_ids"])


def recorded_chat(instruction: str, input: str, *, what: str, hint: str,
                  field: str | None = "input") -> Messages:
    """The chat a sample was sampled with, rebuilt from its recorded ``(instruction, input)``.

    ``what`` names the record (``"sample q1-en-0"``) in the error raised when both fields are
    empty: such a record cannot say what the model was asked.
    """
    if not (instruction or input):
        raise InputError(f"{what} has no recorded prompt (instruction and input are empty)",
                         field=field, hint=hint)
    return messages_from_fields(instruction, input)
