"""Query policies: which texts of a question are searched (fused when several).

* ``native``: the question in its own language;
* ``pivot``: its parallel English question;
* ``fused``: both, merged by :class:`~calm_rag.retrieval.fusion.FusionConfig` (z-scores
  summed by default).

``pivot`` and ``fused`` need the pivot query. Without one (``None``, or the question itself,
as for an English question) they search the native question; the retriever logs, once per
call, how many questions that was, unless the question is its own pivot.

A policy is a function ``(query, pivot_query) -> texts``; adding one is one function
decorated with ``@QUERY_POLICIES.register("name")`` (the registry is in calm_rag.registries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from calm_rag.registries import QUERY_POLICIES

log = logging.getLogger(__name__)

QueryPolicy = Callable[[str, str | None], list[str]]
__all__ = ["QUERY_POLICIES", "QueryPolicy", "fused", "native", "pivot", "uses_pivot"]

# Two texts no question is: a policy that searches the second one reads the pivot query.
_PROBE_QUERY, _PROBE_PIVOT = "\0query", "\0pivot"


@QUERY_POLICIES.register("native")
def native(query: str, pivot_query: str | None) -> list[str]:
    return [query]


@QUERY_POLICIES.register("pivot")
def pivot(query: str, pivot_query: str | None) -> list[str]:
    return [pivot_query or query]


@QUERY_POLICIES.register("fused")
def fused(query: str, pivot_query: str | None) -> list[str]:
    return [query] if not pivot_query or pivot_query == query else [query, pivot_query]


def uses_pivot(name: str) -> bool:
    """Whether the registered policy ``name`` searches the pivot query (so that a missing one
    changes what it does), known by what the policy does, not by its name."""
    policy = QUERY_POLICIES.get(name, field="policy")
    return _PROBE_PIVOT in policy(_PROBE_QUERY, _PROBE_PIVOT)
