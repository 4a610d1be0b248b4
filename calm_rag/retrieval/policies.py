"""Query policies: which texts of a question are searched (fused by rank when several).

* ``native``: the question in its own language;
* ``pivot``: its parallel English question (the native one when no pivot is given);
* ``fused``: both, merged by reciprocal-rank fusion.

A policy is a function ``(query, pivot_query) -> texts``; adding one is one function
decorated with ``@QUERY_POLICIES.register("name")`` (the registry is in calm_rag.registries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from calm_rag.registries import QUERY_POLICIES

log = logging.getLogger(__name__)

QueryPolicy = Callable[[str, str | None], list[str]]
__all__ = ["QUERY_POLICIES", "QueryPolicy", "fused", "native", "pivot"]


@QUERY_POLICIES.register("native")
def native(query: str, pivot_query: str | None) -> list[str]:
    return [query]


@QUERY_POLICIES.register("pivot")
def pivot(query: str, pivot_query: str | None) -> list[str]:
    if not pivot_query:
        log.debug("pivot policy without a pivot query: searching the native query")
    return [pivot_query or query]


@QUERY_POLICIES.register("fused")
def fused(query: str, pivot_query: str | None) -> list[str]:
    return [query] if not pivot_query or pivot_query == query else [query, pivot_query]
