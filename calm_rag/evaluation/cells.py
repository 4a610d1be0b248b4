"""An evaluation cell: a split of the questions, before or after alignment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Cell:
    """``Cell("heldout", "after")``; written ``heldout/after`` in metrics.json and
    ``heldout-after`` in file names, and read back from those by :meth:`parse` alone."""

    split: str
    phase: str

    def __str__(self) -> str:
        return f"{self.split}/{self.phase}"

    @property
    def file_stem(self) -> str:
        """The cell in a file name: ``eval/heldout-after.jsonl``."""
        return f"{self.split}-{self.phase}"

    @classmethod
    def parse(cls, name: str) -> Cell:
        """``"heldout/after"`` → ``Cell("heldout", "after")``."""
        split, _, phase = name.partition("/")
        if not split or not phase or "/" in phase:
            raise ValueError(f"evaluation cell {name!r} is not named 'split/phase' "
                             "(like 'heldout/before')")
        return cls(split, phase)
