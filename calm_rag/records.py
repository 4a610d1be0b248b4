"""The typed records that flow between stages; JSONL on disk (one record a line)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io.read import expect, expect_map

SETTINGS = ("zero-shot", "rag")


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: dict) -> Any:
    return expect(obj, key, kind, where.get("path"), where.get("line"))


def _optional(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: dict,
              default: Any) -> Any:
    return expect(obj, key, kind, where.get("path"), where.get("line"), default=default)


def _language_token(obj: dict[str, Any], key: str, where: dict) -> str:
    """A language code: a known one normalized, else a plain code (it names output files)."""
    from calm_rag.languages import normalize_code

    value = _require(obj, key, str, where)
    try:
        return normalize_code(value)
    except InputError:
        if _LANG_TOKEN.fullmatch(value):
            return value
        raise InputError(f"{value!r} is not a language code", field=key, **where) from None


_LANG_TOKEN = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")


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

        path, line = where.get("path"), where.get("line")
        options = expect_map(obj, "options", str, path, line, prefix="question.")
        try:
            lang = normalize_code(expect(obj, "lang", str, path, line, prefix="question."))
            return cls(
                id=str(expect(obj, "id", (str, int), path, line, prefix="question.")),
                lang=lang,
                stem=expect(obj, "stem", str, path, line, prefix="question."),
                options=dict(options),
                answer=expect(obj, "answer", (str, type(None)), path, line, default=None,
                              prefix="question."),
                source=expect(obj, "source", str, path, line, default="", prefix="question."),
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
        setting = _optional(obj, "setting", str, where, "zero-shot")
        if setting not in SETTINGS:
            raise InputError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}",
                             field="setting", **where)
        answer = _optional(obj, "answer", (str, type(None)), where, None)
        # CALM's own reading keeps any lone character as the answer (answers.calm_first_char).
        off_options_ok = obj.get("extraction") == "calm_first_char"
        if answer is not None and answer not in question.options and not off_options_ok:
            raise InputError(f"answer letter {answer!r} is outside the options "
                             f"{', '.join(question.labels)}", field="answer", **where)
        _optional(obj, "id", str, where, None)  # derived from the fields below; only checked
        index = _optional(obj, "index", int, where, 0)
        if index < 0:
            raise InputError("must be 0 or more", field="index", **where)
        return cls(
            question=question,
            text=_require(obj, "text", str, where),
            index=index,
            setting=setting,
            answer=answer,
            extraction=_optional(obj, "extraction", str, where, ""),
            instruction=_optional(obj, "instruction", str, where, ""),
            input=_optional(obj, "input", str, where, ""),
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
    def from_dict(cls, obj: dict[str, Any], **where: Any) -> Vote:
        path, line = where.get("path"), where.get("line")
        by_language = _require(obj, "by_language", dict, where)
        for lang in by_language:
            expect_map(by_language, lang, int, path, line, prefix="by_language.")
        return cls(
            question_id=str(_require(obj, "question_id", (str, int), where)),
            setting=_require(obj, "setting", str, where),
            answer=_optional(obj, "answer", (str, type(None)), where, None),
            status=_require(obj, "status", str, where),
            counts=expect_map(obj, "counts", int, path, line),
            by_language=by_language,
            n_responses=_require(obj, "n_responses", int, where),
            n_parsed=_require(obj, "n_parsed", int, where),
            gold=_optional(obj, "gold", (str, type(None)), where, None),
        )


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
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(obj) - known
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}", **where)
        text = {key: _require(obj, key, str, where)
                for key in ("setting", "instruction", "input", "chosen", "rejected",
                            "chosen_answer", "chosen_sample_id", "rejected_sample_id")}
        return cls(
            question_id=str(_require(obj, "question_id", (str, int), where)),
            lang=_language_token(obj, "lang", where),
            rejected_answer=_optional(obj, "rejected_answer", (str, type(None)), where, None),
            vote_counts=expect_map(obj, "vote_counts", int, where.get("path"), where.get("line")),
            chosen_source=_optional(obj, "chosen_source", str, where, "same-language"),
            target=_optional(obj, "target", str, where, "majority"),
            extra=_optional(obj, "extra", dict, where, {}),
            **text,
        )
