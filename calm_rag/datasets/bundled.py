"""The questions shipped with calm_rag: a medical set (MedQA format) and a commonsense set
(X-CSQA format), each question in en, zh, fr, de, it and ja under one parallel id."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.records import Question
from calm_rag.registries import QUESTION_SOURCES

# Each bundled set and the release format its files follow.
BUNDLED_FORMATS = {"medical": "medqa", "commonsense": "xcsqa"}
BUNDLED = tuple(BUNDLED_FORMATS)
BUNDLED_LANGUAGES = ("en", "zh", "fr", "de", "it", "ja")


def bundled_path(name: str) -> Path:
    """Folder of a bundled set inside the installed package."""
    if name not in BUNDLED_FORMATS:
        raise InputError(f"unknown bundled set {name!r}", field="dataset",
                         hint=f"use one of {', '.join(BUNDLED)}")
    return Path(str(resources.files("calm_rag.datasets") / "data" / name))


def load_bundled(name: str, languages: tuple[str, ...] | list[str] = BUNDLED_LANGUAGES
                 ) -> list[Question]:
    """All questions of a bundled set in the given languages, grouped by language."""
    from calm_rag.datasets.medqa import read_medqa
    from calm_rag.datasets.xcsqa import read_xcsqa
    from calm_rag.languages import normalize_code

    folder = bundled_path(name)
    readers = {"medqa": read_medqa, "xcsqa": read_xcsqa}
    read = readers[BUNDLED_FORMATS[name]]
    questions = []
    for code in (normalize_code(c) for c in languages):
        path = folder / f"{code}.jsonl"
        if not path.is_file():
            raise InputError(f"the bundled {name} set has no {code} file",
                             field="languages", hint=f"use {', '.join(BUNDLED_LANGUAGES)}")
        questions += read(path, code, source=f"bundled-{name}")
    return questions


@dataclass(frozen=True)
class BundledSource:
    """The sets shipped with calm_rag (``data.dataset``: medical or commonsense)."""

    sets: tuple[str, ...] = BUNDLED
    """What ``data.dataset`` may name: this source reads no ``data.path``."""

    def __call__(self, data: Any, base_dir: str | Path) -> list[Question]:
        return load_bundled(data.dataset, data.languages)


bundled_source = BundledSource()
QUESTION_SOURCES.register("bundled", bundled_source)
