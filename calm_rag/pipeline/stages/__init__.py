"""The cached stages of a run: retrieve, sample (resumable in shards), answers, regenerate,
align, option scores.

Each stage computes its key from its inputs' content first; a key already in the cache means
the stage's output is read back and nothing runs (no model is even loaded). All of them run
through :func:`calm_rag.pipeline.cached.run_cached`.
"""

from calm_rag.pipeline.stages.align import Round, align_for_backend, align_stage
from calm_rag.pipeline.stages.context import RunContext, passage_key
from calm_rag.pipeline.stages.retrieve import RETRIEVE, Retrieved, ensure_index, retrieve_stage
from calm_rag.pipeline.stages.sample import (
    ANSWERS,
    SAMPLE,
    SampleJob,
    answers_stage,
    passages_for,
    passages_of,
    sample_key,
    sample_stage,
)

__all__ = ["ANSWERS", "RETRIEVE", "SAMPLE", "Retrieved", "Round", "RunContext", "SampleJob",
           "align_for_backend", "align_stage", "answers_stage", "ensure_index", "passage_key",
           "passages_for", "passages_of", "retrieve_stage", "sample_key", "sample_stage"]
