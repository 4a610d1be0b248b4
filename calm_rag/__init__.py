"""calm_rag: cross-lingual self-alignment (CALM), zero-shot or retrieval-augmented.

The public API the CLI and notebooks share::

    from calm_rag import load_bundled, read_samples, VoteConfig, vote_all, build_pairs
    from calm_rag import load_experiment, run_experiment, open_run, latest_run
"""

import os

# Spinning OpenMP threads make torch several times slower on a busy machine with few cores
# (bench/sampling.py shows it); this must be set before anything imports torch, so it lives
# here. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# No network unless asked: the hub libraries (TRL's trainers included) and vLLM report usage at
# run time unless told not to. They read these when first imported, so they are set here,
# before any of them; a user's own setting wins.
TELEMETRY_OFF = {"HF_HUB_DISABLE_TELEMETRY": "1", "DISABLE_TELEMETRY": "1",
                 "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
for _name, _value in TELEMETRY_OFF.items():
    os.environ.setdefault(_name, _value)

from calm_rag.datasets import (  # noqa: E402
    export_llamafactory,
    export_trl,
    load_bundled,
    read_calm_samples,
    read_medqa,
    read_samples,
    read_trl_rows,
    read_xcsqa,
    write_samples,
)
from calm_rag.errors import InputError  # noqa: E402
from calm_rag.evaluation import compute_metrics, format_metrics_table  # noqa: E402
from calm_rag.experiment import Experiment, load_experiment  # noqa: E402
from calm_rag.languages import LANGUAGES, get_language, normalize_code  # noqa: E402
from calm_rag.pipeline.run import RunResult, run_experiment  # noqa: E402
from calm_rag.records import PreferencePair, Question, Sample, Vote  # noqa: E402
from calm_rag.runs import RunFolder, latest_run, open_run  # noqa: E402
from calm_rag.sampling import SamplingParams, make_sampler, sample_questions  # noqa: E402
from calm_rag.vote.answers import (  # noqa: E402
    CALM_CHAIN,
    DEFAULT_CHAIN,
    extract_answer,
    extract_samples,
)
from calm_rag.vote.pairs import build_pairs  # noqa: E402
from calm_rag.vote.voting import PRESETS, VoteConfig, vote, vote_all  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CALM_CHAIN",
    "DEFAULT_CHAIN",
    "Experiment",
    "LANGUAGES",
    "PRESETS",
    "InputError",
    "PreferencePair",
    "Question",
    "RunFolder",
    "RunResult",
    "Sample",
    "SamplingParams",
    "Vote",
    "VoteConfig",
    "build_pairs",
    "compute_metrics",
    "export_llamafactory",
    "export_trl",
    "extract_answer",
    "extract_samples",
    "format_metrics_table",
    "get_language",
    "latest_run",
    "load_experiment",
    "load_bundled",
    "make_sampler",
    "normalize_code",
    "open_run",
    "read_calm_samples",
    "read_medqa",
    "read_samples",
    "read_trl_rows",
    "read_xcsqa",
    "run_experiment",
    "sample_questions",
    "vote",
    "vote_all",
    "write_samples",
]
