"""Metrics of cross-lingual consistency and accuracy, the evaluation grid, plots and report."""

from calm_rag.evaluation.delta import retrieval_delta
from calm_rag.evaluation.grid import (
    consistency_change,
    evaluation_grid,
    extraction_methods,
    format_grid_table,
)
from calm_rag.evaluation.metrics import compute_metrics
from calm_rag.evaluation.plots import plot_accuracy, plot_agreement, plot_retrieval_delta
from calm_rag.evaluation.report import write_report
from calm_rag.evaluation.tables import format_metrics_table

__all__ = [
    "compute_metrics",
    "consistency_change",
    "evaluation_grid",
    "extraction_methods",
    "format_grid_table",
    "format_metrics_table",
    "plot_accuracy",
    "plot_agreement",
    "plot_retrieval_delta",
    "retrieval_delta",
    "write_report",
]
