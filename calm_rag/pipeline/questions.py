"""The questions of an experiment, parallel across its languages, split into train / held-out."""

from __future__ import annotations

import random
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.experiment import DataConfig
from calm_rag.records import Question


def load_questions(data: DataConfig, base_dir: str | Path = ".") -> list[Question]:
    """Every question of ``data`` in every language of ``data.languages``."""
    from calm_rag.languages import normalize_code

    languages = [normalize_code(code) for code in data.languages]
    if data.source == "bundled":
        from calm_rag.datasets.bundled import load_bundled

        return load_bundled(data.dataset, languages)
    if not data.path:
        raise InputError(f"data.source {data.source} needs data.path", field="data.path",
                         hint="one file per language, e.g. data/xcsqa/{lang}/dev.jsonl")
    if "{lang}" not in data.path:
        raise InputError("the path has no {lang} placeholder", field="data.path",
                         hint="e.g. data/medqa/{lang}/test.jsonl")
    return [q for lang in languages for q in _read_language(data, lang, Path(base_dir))]


def _read_language(data: DataConfig, lang: str, base_dir: Path) -> list[Question]:
    from calm_rag.datasets import read_medqa, read_xcsqa

    path = Path(data.path.replace("{lang}", lang))
    path = path if path.is_absolute() else base_dir / path
    if not path.exists():
        raise InputError(f"no {data.source} file for language {lang}", path=path,
                         field="data.path", hint="check data.path and data.languages")
    reader = read_medqa if data.source == "medqa" else read_xcsqa
    return reader(path, lang)


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
        raise InputError(f"{len(ids)} questions exist in every language, the split asks for "
                         f"{needed}", field="data.train",
                         hint=f"lower data.train/data.heldout to at most {len(ids)} in all")
    random.Random(data.seed).shuffle(ids)
    chosen = {"train": ids[: data.train], "heldout": ids[data.train : needed]}
    return {split: [q for q in questions if q.id in set(group)]
            for split, group in chosen.items()}
