"""The model-reference check the config loader runs on every model key (no torch, no network)."""

from __future__ import annotations

from collections.abc import Collection

from calm_rag.models.embedders import DEFAULT_EMBEDDERS
from calm_rag.models.generator import DEFAULT_GENERATOR
from calm_rag.models.references import check_reference


def check_model_reference(name: str, *, field: str | None = None,
                          defaults: Collection[str] | None = None) -> None:
    """Raise a one-line :class:`~calm_rag.errors.InputError` unless ``name`` can be a model:
    a default's short name (``defaults``; all of calm_rag's when None), a model folder, or a
    hub id (``owner/name``). A file, an empty folder, a folder without a model, or a relative
    name that is neither a folder nor a hub id fails, naming ``field`` when given."""
    known = {DEFAULT_GENERATOR, *DEFAULT_EMBEDDERS} if defaults is None else defaults
    check_reference(name, defaults=known, field=field)
