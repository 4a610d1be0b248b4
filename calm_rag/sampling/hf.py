"""The ``hf`` backend: transformers ``generate`` on a local folder or a hub model, batched."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from calm_rag.errors import InputError
from calm_rag.models import (
    DEFAULT_GENERATOR,
    DTYPES,
    check_model_reference,
    load_causal_lm,
    resolve_generator,
)
from calm_rag.runtime.threads import torch_threads
from calm_rag.sampling.base import SAMPLERS, Messages, Sampler
from calm_rag.sampling.chat import encode_chat
from calm_rag.sampling.params import SamplingParams

log = logging.getLogger(__name__)

if "torch" not in sys.modules:
    # OpenMP threads that spin while they wait make torch several times slower when the cores
    # are shared (bench/sampling.py); sleeping waiters cost next to nothing on an
    # idle machine. OpenMP reads this once, when torch loads, so it is set before that (torch
    # is imported lazily below, and importing calm_rag.sampling imports this module first).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

@dataclass(frozen=True)
class HFOptions:
    """Parameters of the ``hf`` sampler (``generator.options`` when ``backend: hf``)."""

    batch_size: int = 12
    """Prompts per generate call; each expands to n sequences."""
    dtype: str = "auto"
    """Weights dtype: float32, bfloat16, float16, or auto: bfloat16 where the hardware
    computes in it (a bf16 GPU, a CPU with AVX512-BF16/AMX), float32 elsewhere
    (CALM_RAG_BF16=0/1 overrides)."""
    threads: int | None = None
    """CPU threads for torch; default: the cores available."""
    device: str = "auto"
    """Where the model runs: auto (the first GPU when torch sees one, else the CPU), cpu, cuda
    or cuda:N. The log-prob scorer follows this choice."""
    device_map: str | None = None
    """null, or auto: accelerate spreads a model too big for one GPU over every visible GPU
    (then CPU memory); ``device`` is then not used."""
    adapter: str | None = None
    """A PEFT LoRA adapter folder applied on top of the model (merged in memory, nothing
    written). Set by the pipeline after training; a user may also set it to sample a base
    model with an adapter."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        from calm_rag.config import at_least, one_of
        from calm_rag.runtime.hardware import check_device

        at_least(self, 1, "batch_size", "threads")
        one_of("dtype", self.dtype, DTYPES)
        check_device("device", self.device, self.device_map)
        if self.adapter is not None and not self.adapter.strip():
            raise InputError("must be an adapter folder (or null)", field="adapter")


@SAMPLERS.register("hf")
class HFSampler(Sampler):
    """Samples with ``model.generate``: left padding, ``num_return_sequences=n``, seeded."""

    Options = HFOptions
    default_model = DEFAULT_GENERATOR
    loads_adapters = True  # PEFT applies options.adapter when the model loads

    @classmethod
    def dtype_of(cls, options: HFOptions) -> str | None:
        return options.dtype

    @classmethod
    def placement(cls, options: HFOptions) -> tuple[str, str | None]:
        return options.device, options.device_map
    options: HFOptions

    def __init__(self, model: str | os.PathLike[str] | None = None,
                 options: HFOptions | None = None, *, loaded: tuple[Any, Any] | None = None
                 ) -> None:
        """Load ``model`` (the default's short name, a folder or a hub id), or use ``loaded``:
        a model and its tokenizer already in memory (e.g. a model just trained, evaluated
        without a reload)."""
        super().__init__(model, options)
        weights, tokenizer = loaded or _load(self.model_name, self.options)
        self.model = weights.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues right after each prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.last_stats: dict[str, float] = {}

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        import torch

        from calm_rag.runtime.progress import progress_bar

        encoded = [encode_chat(self.tokenizer, chat, params.chat_template_kwargs)
                   for chat in prompts]
        # Longest first, so each mini-batch holds prompts of similar length (little padding)
        # and an out-of-memory error, if any, comes at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[list[str]] = [[] for _ in prompts]
        size = self.options.batch_size
        torch.manual_seed(params.seed)
        started, new_tokens = time.perf_counter(), 0
        bar = progress_bar("sampling", len(prompts), unit="prompt",
                           enabled=self.options.progress)
        with torch.inference_mode(), torch_threads(self.options.threads), bar:
            for start in range(0, len(order), size):
                batch = order[start : start + size]
                texts, count = self._generate_batch([encoded[i] for i in batch], params)
                for i, out in zip(batch, texts, strict=True):
                    results[i] = out
                new_tokens += count
                bar.update(len(batch))
                bar.set_postfix(tok_s=f"{new_tokens / (time.perf_counter() - started):.0f}")
        self._log_stats(len(prompts), new_tokens, time.perf_counter() - started, params)
        return results

    def _generate_batch(self, ids: list[list[int]], params: SamplingParams
                        ) -> tuple[list[list[str]], int]:
        """``n`` texts per prompt of one mini-batch, and the number of tokens generated."""
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        batch = batch.to(self.model.device)
        copies = 1 if params.greedy else params.n
        sampling: dict[str, Any] = {} if params.greedy else {
            "temperature": params.temperature, "top_p": params.top_p,
            "top_k": params.top_k or 0,  # default no top-k cut, as in vLLM and OpenAI
            "min_p": params.min_p or None,
        }
        if params.stop:  # generation stops at them; the texts are cut before them below
            sampling |= {"stop_strings": list(params.stop), "tokenizer": self.tokenizer}
        out = self.model.generate(
            **batch, do_sample=not params.greedy, num_return_sequences=copies,
            max_new_tokens=params.max_tokens, pad_token_id=self.tokenizer.pad_token_id,
            **sampling,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        texts = [cut_at_stop(t, params.stop)
                 for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        per_prompt = [texts[i * copies : (i + 1) * copies] for i in range(len(ids))]
        if params.greedy:
            per_prompt = [group * params.n for group in per_prompt]
        return per_prompt, _count_generated(new, self.model.generation_config.eos_token_id)

    def _log_stats(self, prompts: int, tokens: int, seconds: float,
                   params: SamplingParams) -> None:
        self.last_stats = {"prompts": prompts, "sequences": prompts * params.n,
                           "new_tokens": tokens, "seconds": seconds,
                           "tokens_per_s": tokens / seconds if seconds else 0.0}
        log.info("sampled %d prompts x %d in %.1f s (%d new tokens, %.0f tok/s)", prompts,
                 params.n, seconds, tokens, self.last_stats["tokens_per_s"])


def _load(model: str | None, options: HFOptions) -> tuple[Any, Any]:
    from calm_rag.runtime.hardware import resolve_device

    model = model or DEFAULT_GENERATOR
    check_model_reference(model, field="generator.model", defaults=(DEFAULT_GENERATOR,))
    device = (None if options.device_map is not None
              else resolve_device(options.device, field="generator.options.device"))
    return load_causal_lm(resolve_generator(model), dtype=options.dtype, device=device,
                          device_map=options.device_map, adapter=options.adapter,
                          adapter_field="generator.options.adapter")


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to the first of the ``stop`` strings, as vLLM returns it."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(ends)] if ends else text


def _count_generated(new: Any, eos: int | list[int] | None) -> int:
    """Tokens actually generated: up to and including each sequence's first end token."""
    import torch

    if eos is None:
        return int(new.numel())
    ends = torch.isin(new, torch.tensor(eos if isinstance(eos, list) else [eos]))
    # Positions after the first end token are padding.
    after_end = (ends.cumsum(dim=1) - ends.long()) > 0
    return int((~after_end).sum())



