"""Typed keys of the pipeline's jobs and passages: built once, never parsed back from strings.

A job's :class:`JobKey` prints as the label the logs and the run manifest show
(``r1/train/zero-shot/en``, ``heldout/after/rag``); code reads its fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from calm_rag.evaluation.cells import Cell


@dataclass(frozen=True)
class JobKey:
    """One sampling job: the training questions of a round, or an evaluation cell; in one
    setting; all languages, or one (``data.sample_per_language``)."""

    setting: str
    round: int | None = None
    """The alignment round whose training questions are sampled (None: an evaluation)."""
    cell: Cell | None = None
    """The evaluation cell sampled (None: a round's training questions)."""
    lang: str | None = None

    def __post_init__(self) -> None:
        if (self.round is None) == (self.cell is None):
            raise ValueError("a job samples a round's training questions or an evaluation "
                             "cell: give one of round and cell")

    @classmethod
    def training(cls, round: int, setting: str) -> JobKey:
        return cls(setting, round=round)

    @classmethod
    def evaluation(cls, split: str, phase: str, setting: str) -> JobKey:
        return cls(setting, cell=Cell(split, phase))

    def in_language(self, lang: str) -> JobKey:
        return dataclasses.replace(self, lang=lang)

    def __str__(self) -> str:
        where = f"r{self.round}/train" if self.cell is None else str(self.cell)
        return "/".join([where, self.setting, *([self.lang] if self.lang else [])])


@dataclass(frozen=True, order=True)
class PassageKey:
    """The passages of one question in one language."""

    question_id: str
    lang: str

    @classmethod
    def of(cls, question: Any) -> PassageKey:
        return cls(question.id, question.lang)
