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


def load_sets(data: DataConfig, base_dir: str | Path = "."
              ) -> tuple[Alignment, Alignment | None]:
    """The checked questions of ``data`` and, with ``data.eval``, of the evaluation set
    (what the check dropped from either is logged)."""
    trained = check_questions(data, base_dir)
    log_dropped(trained)
    evaluated_data = data.eval_data()
    if evaluated_data is None:
        return trained, None
    evaluated = check_questions(evaluated_data, base_dir)
    log_dropped(evaluated)
    return trained, evaluated


def split_questions(questions: list[Question], data: DataConfig,
                    evaluated: list[Question] | None = None) -> dict[str, list[Question]]:
    """``{"train": [...], "heldout": [...]}``: ids present in every language, shuffled by
    ``data.seed``, the first ``data.train`` for alignment and the next ``data.heldout`` kept out.

    With ``evaluated`` (the questions of ``data.eval``), the held-out questions are the first
    ``data.heldout`` of that set instead, each set shuffled on its own; a question id in both
    is refused (the same question would be trained on and evaluated)."""
    if evaluated is None:
        ids = _parallel_ids(questions)
        _enough(ids, data.train + data.heldout, data, "")
        random.Random(data.seed).shuffle(ids)
        end = data.train + data.heldout
        chosen = {"train": ids[: data.train], "heldout": ids[data.train : end]}
        return _pick(chosen, {"train": questions, "heldout": questions})
    train_ids, eval_ids = _parallel_ids(questions), _parallel_ids(evaluated)
    _enough(train_ids, data.train, data, "training set")
    _enough(eval_ids, data.heldout, data, "evaluation set (data.eval)")
    random.Random(data.seed).shuffle(train_ids)
    random.Random(data.seed).shuffle(eval_ids)
    chosen = {"train": train_ids[: data.train], "heldout": eval_ids[: data.heldout]}
    _refuse_overlap(chosen)
    return _pick(chosen, {"train": questions, "heldout": evaluated})


def _parallel_ids(questions: list[Question]) -> list[str]:
    """The ids present in every language of ``questions``, in order of first appearance."""
    langs = {q.lang for q in questions}
    by_id: dict[str, set[str]] = {}
    for q in questions:
        by_id.setdefault(q.id, set()).add(q.lang)
    return [qid for qid, seen in by_id.items() if seen == langs]


def _enough(ids: list[str], needed: int, data: DataConfig, which: str) -> None:
    """Refuse a split asking for more questions than exist in every language."""
    if len(ids) >= needed:
        return
    if which:  # one size per set: the error names that set's key
        key = "data.train" if which == "training set" else "data.heldout"
        raise InputError(f"{len(ids)} questions of the {which} exist in every language, "
                         f"{key} asks for {needed}", field=key,
                         hint=f"lower {key} to at most {len(ids)}")
    key = "data.train" if len(ids) < data.train else "data.heldout"
    raise InputError(f"{len(ids)} questions exist in every language, the split asks for "
                     f"{needed}", field=key,
                     hint=f"lower data.train/data.heldout to at most {len(ids)} in all")


def _refuse_overlap(chosen: dict[str, list[str]]) -> None:
    """A question both aligned on and evaluated would inflate every after-alignment figure."""
    both = sorted(set(chosen["train"]) & set(chosen["heldout"]))
    if both:
        named = ", ".join(both[:3]) + (f" and {len(both) - 3} more" if len(both) > 3 else "")
        raise InputError(f"{len(both)} question ids are in both the training set and "
                         f"data.eval: {named}", field="data.eval",
                         hint="evaluate on another set than the one aligned on, or leave "
                              "data.eval unset to split one set")


def _pick(chosen: dict[str, list[str]], sources: dict[str, list[Question]]
          ) -> dict[str, list[Question]]:
    """Each split's questions (every language), in the order they were read."""
    wanted = {split: set(group) for split, group in chosen.items()}
    return {split: [q for q in sources[split] if q.id in wanted[split]] for split in chosen}
