"""Kept only for ``calm_rag.experiment``'s import until the merge: the default generator lives
in :mod:`calm_rag.models.generator`. Delete this file once experiment.py imports
``DEFAULT_GENERATOR`` from ``calm_rag.models``."""

from calm_rag.models.generator import DEFAULT_GENERATOR

__all__ = ["DEFAULT_GENERATOR"]
