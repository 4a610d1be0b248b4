"""calm_rag: cross-lingual self-alignment (CALM), zero-shot or retrieval-augmented.

The public API the CLI and notebooks share::

    from calm_rag import load_bundled, read_samples, VoteConfig, vote_all, build_pairs
"""

from calm_rag.answers import CALM_CHAIN, DEFAULT_CHAIN, extract_answer, extract_samples
from calm_rag.datasets import (
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
from calm_rag.errors import InputError
from calm_rag.evaluation import compute_metrics, format_metrics_table
from calm_rag.languages import LANGUAGES, get_language, normalize_code
from calm_rag.pairs import build_pairs
from calm_rag.records import PreferencePair, Question, Sample, Vote
from calm_rag.voting import PRESETS, VoteConfig, vote, vote_all

__version__ = "0.1.0"

__all__ = [
    "CALM_CHAIN",
    "DEFAULT_CHAIN",
    "LANGUAGES",
    "PRESETS",
    "InputError",
    "PreferencePair",
    "Question",
    "Sample",
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
    "load_bundled",
    "normalize_code",
    "read_calm_samples",
    "read_medqa",
    "read_samples",
    "read_trl_rows",
    "read_xcsqa",
    "vote",
    "vote_all",
    "write_samples",
]
