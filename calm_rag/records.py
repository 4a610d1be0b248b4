"""The typed records that flow between stages; JSONL on disk (one record a line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from calm_rag.errors import InputError

SETTINGS = ("zero-shot", "rag")


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: dict) -> Any:
    if key not in obj or obj[key] is None:
        raise InputError("missing", field=key, **where)
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InputError(f"expected {names}, got {type(value).__name__}", field=key, **where)
    return value


@dataclass(frozen=True)
class Question:
    """One multiple-choice question in one language; ``id`` is shared by its translations."""

    id: str
    lang: str
    stem: str
    options: dict[str, str]
    answer: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.options:
            raise InputError("a question needs at least one option", field="options")
        if self.answer is not None and self.answer not in self.options:
            raise InputError(
                f"answer {self.answer!r} is not one of the options {', '.join(self.options)}",
                field="answer",
            )

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], **where: Any) -> Question:
        from calm_rag.languages import normalize_code

        options = _require(obj, "options", dict, where)
        try:
            lang = normalize_code(_require(obj, "lang", str, where))
            return cls(
                id=str(_require(obj, "id", (str, int), where)),
                lang=lang,
                stem=_require(obj, "stem", str, where),
                options={str(k): str(v) for k, v in options.items()},
                answer=obj.get("answer"),
                source=obj.get("source", ""),
            )
        except InputError as err:
            raise err.at(**where) from None


@dataclass(frozen=True)
class Sample:
    """One sampled response to a question, with the answer letter extracted from it."""

    question: Question
    text: str
    index: int = 0
    setting: str = "zero-shot"
    answer: str | None = None
    extraction: str = ""  # "" = not extracted yet; else the extractor name or "none"
    instruction: str = ""
    input: str = ""

    @property
    def id(self) -> str:
        return f"{self.question.id}/{self.question.lang}/{self.setting}/{self.index}"

    @property
    def lang(self) -> str:
        return self.question.lang

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question.to_dict(),
            "setting": self.setting,
            "index": self.index,
            "instruction": self.instruction,
            "input": self.input,
            "text": self.text,
            "answer": self.answer,
            "extraction": self.extraction,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any], **where: Any) -> Sample:
        question = Question.from_dict(_require(obj, "question", dict, where), **where)
        setting = obj.get("setting", "zero-shot")
        if setting not in SETTINGS:
            raise InputError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}",
                             field="setting", **where)
        answer = obj.get("answer")
        # CALM's own reading keeps any lone character as the answer (answers.calm_first_char).
        off_options_ok = obj.get("extraction") == "calm_first_char"
        if answer is not None and answer not in question.options and not off_options_ok:
            raise InputError(f"answer letter {answer!r} is outside the options "
                             f"{', '.join(question.labels)}", field="answer", **where)
        return cls(
            question=question,
            text=_require(obj, "text", str, where),
            index=int(obj.get("index", 0)),
            setting=setting,
            answer=answer,
            extraction=obj.get("extraction", ""),
            instruction=obj.get("instruction", ""),
            input=obj.get("input", ""),
        )


@dataclass(frozen=True)
class Vote:
    """The cross-lingual vote on one question in one setting."""

    question_id: str
    setting: str
    answer: str | None
    status: str
    counts: dict[str, int]
    by_language: dict[str, dict[str, int]]
    n_responses: int
    n_parsed: int
    gold: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Vote:
        return cls(**obj)


@dataclass(frozen=True)
class PreferencePair:
    """One DPO row: a response that agrees with the vote and one that does not."""

    question_id: str
    lang: str
    setting: str
    instruction: str
    input: str
    chosen: str
    rejected: str
    chosen_answer: str
    rejected_answer: str | None
    vote_counts: dict[str, int]
    chosen_sample_id: str
    rejected_sample_id: str
    chosen_source: str = "same-language"
    target: str = "majority"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], **where: Any) -> PreferencePair:
        for key in ("question_id", "lang", "chosen", "rejected", "chosen_answer"):
            _require(obj, key, str, where)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(obj) - known
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}", **where)
        return cls(**obj)
