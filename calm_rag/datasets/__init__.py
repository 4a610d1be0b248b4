"""Readers and writers for the question, sample and preference formats researchers use."""

from calm_rag.datasets import builtin as _builtin  # noqa: F401 - registers the entries
from calm_rag.datasets.bundled import load_bundled
from calm_rag.datasets.calm import export_llamafactory, read_calm_samples
from calm_rag.datasets.entry import DatasetEntry
from calm_rag.datasets.medqa import read_medqa
from calm_rag.datasets.samples import read_samples, write_samples
from calm_rag.datasets.trl import export_trl, read_trl_rows
from calm_rag.datasets.xcsqa import read_xcsqa

__all__ = [
    "DatasetEntry",
    "export_llamafactory",
    "export_trl",
    "load_bundled",
    "read_calm_samples",
    "read_medqa",
    "read_samples",
    "read_trl_rows",
    "read_xcsqa",
    "write_samples",
]
