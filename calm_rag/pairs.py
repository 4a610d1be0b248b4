"""Moved to :mod:`calm_rag.vote.pairs` (this name is deprecated)."""

from calm_rag.runtime.moved import moved

moved(__name__, "calm_rag.vote.pairs")
