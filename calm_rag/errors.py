"""The one error type for bad user input: it says where and what to do."""

from __future__ import annotations

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
