"""The CALM loop as cached stages: ``run_experiment(load_experiment("pipelines/demo.yaml"))``.

Sample every language → answers (extraction, log-prob fallback) → vote → pairs → align
(DPO/SFT, ``rounds`` times) → evaluate before/after, zero-shot and with retrieval → report.
"""

from calm_rag.pipeline.run import RunResult, run_experiment
from calm_rag.pipeline.stages import Round, TrainingResult

__all__ = ["Round", "RunResult", "TrainingResult", "run_experiment"]
