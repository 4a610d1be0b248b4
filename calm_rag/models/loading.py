"""The one loader of causal LMs: sampler, log-prob scorer, trainer and conversion alike.

It loads a folder or a hub id as given (callers map the default's short name to its folder
with :func:`calm_rag.models.resolve_generator` first): the reference is checked, then the
tokenizer and the model load from the folder (or the hub, see
:func:`calm_rag.models.references.from_local_or_hub`) in the dtype asked for, on the device
asked for, with a PEFT LoRA adapter applied when one is given (merged in memory only).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.models.references import check_reference, from_local_or_hub

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def torch_dtype(dtype: str, gpu: bool | None = None) -> Any:
    """The torch dtype named ``dtype``; ``"auto"`` is the hardware's choice
    (:func:`calm_rag.runtime.hardware.auto_precision`: bfloat16 where it computes in it, else
    float32);
    ``gpu`` says whether the model runs on a GPU (default: whether torch sees one)."""
    import torch

    from calm_rag.runtime.hardware import resolve_dtype

    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}", field="dtype",
                         hint=f"use {', '.join(DTYPES)}")
    return getattr(torch, resolve_dtype(dtype, gpu=gpu))


def load_tokenizer(path: str, **kwargs: Any) -> Any:
    """The tokenizer of a model folder or hub id (its chat template included)."""
    from transformers import AutoTokenizer

    check_reference(path)
    return from_local_or_hub(path, AutoTokenizer.from_pretrained, **kwargs)


def load_causal_lm(path: str, *, dtype: str = "auto", device: str | None = None,
                   device_map: str | None = None, adapter: str | None = None,
                   adapter_field: str = "adapter", **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a causal LM in a folder or on the hub (``owner/name``).

    ``dtype`` is one of :data:`DTYPES` (``auto`` decided for the device the model runs on);
    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, already resolved) moves the model there
    when given; ``device_map="auto"`` lets accelerate place it over the visible GPUs instead.
    ``adapter``, a PEFT LoRA folder (``adapter_field`` names its key in errors), is applied
    and merged into the weights in memory (nothing is written). Other keyword arguments go to
    both ``from_pretrained`` calls (``gguf_file``, ``local_files_only``). A model that cannot
    be loaded is an ``InputError``.
    """
    from transformers import AutoModelForCausalLM

    if adapter is not None:
        adapter_config(adapter, field=adapter_field)  # a wrong folder fails before the model
    # Where the model runs decides ``auto`` (a GPU's bf16, or the CPU's); a device map (or no
    # device) runs on the GPUs when torch sees one.
    gpu = None if device is None or device_map is not None else device.startswith("cuda")
    wanted = torch_dtype(dtype, gpu=gpu)
    tokenizer = load_tokenizer(path, **kwargs)
    mapped = {"device_map": device_map} if device_map is not None else {}
    model = from_local_or_hub(path, AutoModelForCausalLM.from_pretrained, dtype=wanted,
                              **mapped, **kwargs)
    if device is not None and device_map is None:
        model = model.to(device)
    if adapter is not None:
        model = _with_adapter(model, adapter, adapter_field)
    log.info("loaded %s%s (%s on %s)", path, f" + {adapter}" if adapter else "", model.dtype,
             model.device)
    return model, tokenizer


def adapter_config(folder: str, field: str = "adapter") -> dict[str, Any]:
    """The ``adapter_config.json`` of a PEFT adapter folder; a folder without one (or not a
    LoRA adapter) is an ``InputError`` naming ``field``."""
    config_file = Path(folder) / "adapter_config.json"
    hint = "give the folder PEFT's save_pretrained wrote (it holds adapter_config.json)"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{folder} holds no adapter_config.json", field=field,
                         hint=hint) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {config_file}: {err}", field=field, hint=hint) from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise InputError(f"{folder} is not a LoRA adapter (peft_type {kind!r})", field=field,
                         hint="only LoRA adapters are supported")
    return config


def _with_adapter(model: Any, adapter: str, field: str) -> Any:
    """``model`` with the LoRA adapter in ``adapter`` merged into its weights (in memory:
    generation then runs as fast as the base model's)."""
    from peft import PeftModel

    try:
        with_adapter = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"cannot apply the adapter {adapter}: {err}", field=field,
                         hint="is it an adapter trained on this base model?") from None
    return with_adapter.merge_and_unload()


def saved_dtype(path: str) -> Any:
    """The torch dtype a model's weights were saved in (float32 when its config says none)."""
    import torch
    from transformers import AutoConfig

    saved = getattr(from_local_or_hub(path, AutoConfig.from_pretrained), "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved)
    return saved or torch.float32
