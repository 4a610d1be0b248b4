"""The one loader of causal LMs: sampler, log-prob scorer, trainer and conversion alike.

It loads a folder or a hub id as given (callers map the default's short name to its folder
with :func:`calm_rag.models.resolve_generator` first): the reference is checked, then the
tokenizer and the model load from the folder (or the hub, see
:func:`calm_rag.models.references.from_local_or_hub`) in the dtype asked for.
"""

from __future__ import annotations

import logging
from typing import Any

from calm_rag.errors import InputError
from calm_rag.models.references import check_reference, from_local_or_hub

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def torch_dtype(dtype: str) -> Any:
    """The torch dtype named ``dtype``; ``"auto"`` is the hardware's choice
    (:func:`calm_rag.hardware.auto_precision`: bfloat16 where it computes in it, else float32)."""
    import torch

    from calm_rag.hardware import resolve_dtype

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}", field="dtype",
                         hint=f"use {', '.join(DTYPES)}")
    return getattr(torch, resolve_dtype(dtype))


def load_tokenizer(path: str, **kwargs: Any) -> Any:
    """The tokenizer of a model folder or hub id (its chat template included)."""
    from transformers import AutoTokenizer

    check_reference(path)
    return from_local_or_hub(path, AutoTokenizer.from_pretrained, **kwargs)


def load_causal_lm(path: str, *, dtype: str = "auto", device: str | None = None,
                   **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM in a folder or on the hub (``owner/name``).

    ``dtype`` is one of :data:`DTYPES`; ``device`` (``"cpu"``, ``"cuda"``, ...) moves the model
    there when given. Other keyword arguments go to both ``from_pretrained`` calls
    (``gguf_file``, ``local_files_only``). A model that cannot be loaded is an ``InputError``.
    """
    from transformers import AutoModelForCausalLM

    wanted = torch_dtype(dtype)
    tokenizer = load_tokenizer(path, **kwargs)
    model = from_local_or_hub(path, AutoModelForCausalLM.from_pretrained, dtype=wanted,
                              **kwargs)
    if device is not None:
        model = model.to(device)
    log.info("loaded %s (%s)", path, model.dtype)
    return model, tokenizer


def saved_dtype(path: str) -> Any:
    """The torch dtype a model's weights were saved in (float32 when its config says none)."""
    import torch
    from transformers import AutoConfig

    saved = getattr(from_local_or_hub(path, AutoConfig.from_pretrained), "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved)
    return saved or torch.float32
