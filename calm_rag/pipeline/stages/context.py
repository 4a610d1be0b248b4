"""What every stage of a run shares: the experiment, the cache, the log of what ran."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from calm_rag.datasets.lineup import Alignment
from calm_rag.experiment import Experiment
from calm_rag.pipeline.cache import StageCache
from calm_rag.pipeline.keys import PassageKey
from calm_rag.pipeline.scoring import Scorers
from calm_rag.records import Question

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage needs: the experiment, the cache, and the log of what ran."""

    experiment: Experiment
    cache: StageCache
    stages: list[dict[str, Any]] = field(default_factory=list)
    progress: bool = True
    alignment: Alignment | None = None
    """What the questions' alignment check kept and dropped (for the manifest and report)."""
    scorers: Scorers = field(default_factory=Scorers)
    """The loaded scoring model (answers fallback, option scores), one at a time."""

    def record(self, stage: str, label: str, key: str, cached: bool, seconds: float) -> None:
        self.stages.append({"stage": stage, "label": label, "key": key, "cached": cached,
                            "seconds": round(seconds, 3)})
        how = "cached" if cached else f"{seconds:.1f} s"
        log.info("  %-8s %-28s %s", stage, label, how)


def passage_key(question: Question) -> PassageKey:
    """The key of ``question``'s passages (its id and language)."""
    return PassageKey.of(question)
