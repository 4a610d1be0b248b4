"""What a registered metric is: how it is computed, which way is better, how it aggregates.

A metric registers with :func:`metric`, which records the record a reader needs to compare two
runs (is 0.6 better than 0.5?) and to say what the figure is a mean of. A plain function
registered in ``METRICS`` (a plugin's) is a metric of no declared direction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from calm_rag.registries import METRICS

MetricFn = Callable[[list[dict], list[str]], Any]


@dataclass(frozen=True)
class Metric:
    """A registered metric and how to read its value."""

    compute: MetricFn
    better: Literal["higher", "lower"] | None = None
    """Which way is better; None for a table or a count."""
    aggregation: str = "mean over questions"
    """How per-question (or per-sample) values make the figure, in words."""
    per_language: bool = False
    """Its value is one figure per language."""

    def __call__(self, rows: list[dict], langs: list[str]) -> Any:
        return self.compute(rows, langs)


def metric(name: str, *, better: Literal["higher", "lower"] | None, aggregation: str,
           per_language: bool = False) -> Callable[[MetricFn], MetricFn]:
    """Register the decorated ``fn(per_question_rows, languages)`` as metric ``name``."""
    def register(compute: MetricFn) -> MetricFn:
        METRICS.register(name, Metric(compute, better, aggregation, per_language))
        return compute
    return register


def metric_spec(name: str, field: str = "evaluation.metrics") -> Metric:
    """The registered metric ``name`` with its direction and aggregation."""
    item = METRICS.get(name, field)
    return item if isinstance(item, Metric) else Metric(item)
