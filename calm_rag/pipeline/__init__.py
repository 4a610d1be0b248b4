"""The CALM loop as cached stages: ``run_experiment(load_experiment("pipelines/demo.yaml"))``.

Sample every language → answers (extraction, log-prob fallback) → vote → pairs → align
(DPO/SFT, ``rounds`` times) → evaluate before/after, zero-shot and with retrieval → report.
"""

import warnings
from typing import Any

from calm_rag.pipeline.run import RunResult, run_experiment
from calm_rag.pipeline.stages import Round
from calm_rag.training.common import TrainResult

__all__ = ["Round", "RunResult", "TrainResult", "run_experiment"]

# Old names, kept importable with a deprecation warning.
_DEPRECATED = {
    "TrainingResult": (TrainResult, "calm_rag.pipeline.TrainingResult is now "
                       "calm_rag.training.TrainResult (one type per training; its .log is "
                       "the list of steps, train_log.json's 'steps')"),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        value, note = _DEPRECATED[name]
        warnings.warn(note, DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
