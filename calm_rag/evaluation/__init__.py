"""Metrics of cross-lingual consistency and accuracy (reports and plots come with the loop)."""

from calm_rag.evaluation.metrics import compute_metrics
from calm_rag.evaluation.tables import format_metrics_table

__all__ = ["compute_metrics", "format_metrics_table"]
