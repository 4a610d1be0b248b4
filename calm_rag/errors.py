"""The one error type for bad user input: it says where and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class InputError(ValueError):
    """Bad input from the user (a file, a field, a config key).

    The CLI prints it on one line and exits with code 2. The message names the place
    (``file:line``, the field or the config key), what was wrong and, when known, what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [f"{where}: " if where else ""]
        if self.field:
            parts.append(f"field '{self.field}': ")
        parts.append(self.message)
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)

    def at(self, *, path=None, line=None, field=None) -> InputError:
        """The same error with the place filled in where it was not known yet."""
        return InputError(
            self.message,
            path=self.path or path,
            line=self.line if self.line is not None else line,
            field=self.field or field,
            hint=self.hint,
        )


class InputErrors(InputError):
    """Several independent input errors found in one pass (the bad keys of one config file),
    so that one run shows them all; ``str()`` is one line each, at most ``MAX_SHOWN``.

    It is an InputError (its message, place and hint are the first error's), so code that
    handles one error handles these too.
    """

    MAX_SHOWN = 20

    def __init__(self, errors: Sequence[InputError]) -> None:
        self.errors = flatten(errors)
        first = self.errors[0]
        super().__init__(first.message, path=first.path, line=first.line, field=first.field,
                         hint=first.hint)

    def __str__(self) -> str:
        lines = [str(err) for err in self.errors[:self.MAX_SHOWN]]
        if len(self.errors) > self.MAX_SHOWN:
            lines.append(f"{len(self.errors) - self.MAX_SHOWN} more errors not shown "
                         f"(fix these {self.MAX_SHOWN} first)")
        return "\n".join(lines)

    def at(self, *, path=None, line=None, field=None) -> InputError:
        return InputErrors([err.at(path=path, line=line, field=field) for err in self.errors])


def flatten(errors: Sequence[InputError]) -> list[InputError]:
    """The single errors of ``errors`` (a group's errors in its place)."""
    return [one for err in errors
            for one in (err.errors if isinstance(err, InputErrors) else [err])]


def combined(errors: Sequence[InputError]) -> InputError:
    """One error to raise for ``errors`` (not empty): itself when there is one."""
    single = flatten(errors)
    return single[0] if len(single) == 1 else InputErrors(single)
