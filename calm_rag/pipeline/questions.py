"""The questions of an experiment, parallel across its languages, split into train / held-out."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from calm_rag.datasets.entry import DatasetEntry
from calm_rag.datasets.lineup import Alignment, align, align_questions
from calm_rag.errors import InputError
from calm_rag.experiment import DataConfig
from calm_rag.records import Question
from calm_rag.registries import QUESTION_SOURCES

log = logging.getLogger(__name__)


def load_questions(data: DataConfig, base_dir: str | Path = ".") -> list[Question]:
    """Every question of ``data`` in every language of ``data.languages``, checked to line up
    across them (what ``data.misaligned: drop`` left out is logged)."""
    checked = check_questions(data, base_dir)
    log_dropped(checked)
    return checked.questions


def log_dropped(checked: Alignment) -> None:
    """What the alignment check left out: dropped rows, and ids missing from some language
    (the first few named: such a question cannot vote in every language)."""
    for drop in checked.dropped:
        log.info(f"data: {drop.describe()}")
    if checked.unmatched:
        log.warning(f"data: {checked.unmatched_line()}")


def check_questions(data: DataConfig, base_dir: str | Path = ".") -> Alignment:
    """The questions of ``data`` and what the alignment check kept and dropped.

    A :class:`DatasetEntry` (built in or ``data.entry``) hands over its rows with their files
    and lines, so positions are compared too; any other registered source is joined by id.
    """
    source = data.entry or QUESTION_SOURCES.get(data.source, field="data.source")
    if isinstance(source, DatasetEntry):
        return align(source.load(data, Path(base_dir)), source.parallel, data.misaligned)
    return align_questions(source(data, Path(base_dir)), f"data.source {data.source}",
                           data.misaligned)


def split_questions(questions: list[Question], data: DataConfig
                    ) -> dict[str, list[Question]]:
    """``{"train": [...], "heldout": [...]}``: ids present in every language, shuffled by
    ``data.seed``, the first ``data.train`` for alignment and the next ``data.heldout`` kept out."""
    langs = {q.lang for q in questions}
    by_id: dict[str, set[str]] = {}
    for q in questions:
        by_id.setdefault(q.id, set()).add(q.lang)
    ids = [qid for qid, seen in by_id.items() if seen == langs]
    needed = data.train + data.heldout
    if len(ids) < needed:
        key = "data.train" if len(ids) < data.train else "data.heldout"
        raise InputError(f"{len(ids)} questions exist in every language, the split asks for "
                         f"{needed}", field=key,
                         hint=f"lower data.train/data.heldout to at most {len(ids)} in all")
    random.Random(data.seed).shuffle(ids)
    chosen = {"train": ids[: data.train], "heldout": ids[data.train : needed]}
    return {split: [q for q in questions if q.id in set(group)]
            for split, group in chosen.items()}
