"""What the ``vllm`` backend gives vLLM: its options checked, the engine's and each request's
arguments, and each data-parallel engine's share of the machine.

Importing vLLM takes 10-15 s, too long for loading a config (``calm-rag run --check``), so the
names vLLM accepts are read from its source: the fields of ``EngineArgs``, the parameters of
``LLM.__init__`` and the ``QuantizationMethods`` literal. Where that source cannot be read (vLLM
missing, or moved things around) the check is skipped and vLLM itself refuses a wrong name when
the engine starts.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from calm_rag.config import at_least, one_of
from calm_rag.errors import InputError
from calm_rag.runtime.child_process import Progress
from calm_rag.sampling.params import SamplingParams

# engine_kwargs keys that vLLM names otherwise than the typed option that sets them.
RENAMED = {"kv_cache_memory_bytes": "kv_cache_gib"}
# Arguments the engine gets from calm_rag itself, whatever the options say.
RESERVED = {"seed": "each prompt is seeded from sampling.seed and its own tokens",
            "tokenizer": "calm_rag tokenizes with the model's own tokenizer",
            "skip_tokenizer_init": "calm_rag's prompts are token ids from the model's tokenizer",
            "data_parallel_rank": "calm_rag runs one engine per data-parallel rank itself",
            "data_parallel_size_local": "calm_rag runs one engine per data-parallel rank itself"}
EXECUTORS = ("mp", "ray")
# A Ray cluster's address: started here, found on this node, a Ray Client or a GCS address.
RAY_ADDRESS = re.compile(r"local|auto|ray://[\w.\-]+(:\d{1,5})?|[\w.\-]+:\d{1,5}")


def _vllm_source(relative: str) -> ast.Module | None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, StopIteration):
        return None


def _class(tree: ast.Module | None, name: str) -> ast.ClassDef | None:
    for node in tree.body if tree else ():
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


@functools.cache
def engine_arg_names() -> frozenset[str] | None:
    """What ``vllm.LLM(...)`` accepts: ``EngineArgs``' fields and ``LLM.__init__``'s own
    parameters; None where the installed vLLM's source does not say."""
    engine = _class(_vllm_source("engine/arg_utils.py"), "EngineArgs")
    llm = _class(_vllm_source("entrypoints/llm.py"), "LLM")
    if engine is None or llm is None:
        return None
    names = {node.target.id for node in engine.body
             if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    for node in llm.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            names |= {a.arg for a in node.args.args[1:] + node.args.kwonlyargs}
    return frozenset(names) if len(names) > 20 else None  # a few: not the class we know


@functools.cache
def quantization_methods() -> tuple[str, ...] | None:
    """The quantization methods the installed vLLM knows; None where its source does not say."""
    tree = _vllm_source("model_executor/layers/quantization/__init__.py")
    for node in tree.body if tree else ():
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "QuantizationMethods"
                and isinstance(node.value, ast.Subscript)):
            items = node.value.slice
            if isinstance(items, ast.Tuple):
                return tuple(e.value for e in items.elts
                             if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return None


def check_scale_options(options: Any) -> None:
    """The checks of ``VLLMOptions``' parallelism, model and engine options."""
    at_least(options, 1, "tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs",
             "data_parallel_size")
    if options.distributed_executor_backend is not None:
        one_of("distributed_executor_backend", options.distributed_executor_backend, EXECUTORS)
    if options.revision is not None and not re.fullmatch(r"[\w.\-/]+", options.revision):
        raise InputError(f"must be a branch, tag or commit, got {options.revision!r}",
                         field="revision")
    check_quantization(options.quantization)
    check_ray_address(options.ray_address)
    check_engine_kwargs(options.engine_kwargs,
                        {f.name for f in fields(options)} - {"engine_kwargs"})


def check_devices(options: Any, gpus: int | None = None, nodes: int | None = None,
                  cores: int | None = None) -> None:
    """Parallel sizes this machine can run, checked at load rather than by vLLM's assertion
    after the engine started: on GPUs, every engine's GPUs visible; on a CPU, one NUMA node per
    worker of an engine (vLLM-CPU binds each to its own) and a core per engine. A Ray cluster's
    devices are not known here. ``gpus``, ``nodes`` and ``cores`` default to this machine's."""
    from calm_rag.runtime import hardware

    world, ranks = options.world_size, options.data_parallel_size
    ray = options.ray_address is not None or options.distributed_executor_backend == "ray"
    if ray or world * ranks == 1:
        return
    gpus = hardware.gpu_count() if gpus is None else gpus
    key = "tensor_parallel_size" if options.tensor_parallel_size > 1 else "pipeline_parallel_size"
    if gpus:
        if world * ranks > gpus:
            raise InputError(f"{ranks} engine(s) of {world} GPUs need {world * ranks} GPUs, "
                             f"{gpus} are visible", field=key if world > gpus else
                             "data_parallel_size", hint="lower the parallel sizes, or set "
                             "ray_address to use a cluster's GPUs")
        return
    nodes = hardware.numa_nodes() if nodes is None else nodes
    bound = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") not in ("auto", "")
    if world > nodes and not bound:
        raise InputError(f"{world} workers of one engine need {world} NUMA nodes on a CPU "
                         f"(no GPU is visible), this machine has {nodes}", field=key,
                         hint="vLLM-CPU binds each tensor/pipeline-parallel worker to a NUMA "
                              "node of its own: use 1, or data_parallel_size to share the "
                              "cores among engines")
    cores = hardware.usable_cores() if cores is None else cores
    if ranks > cores:
        raise InputError(f"{ranks} engines on {cores} cores (no GPU is visible)",
                         field="data_parallel_size",
                         hint="each engine needs a core of its own: use at most as many")


def check_engine_kwargs(engine_kwargs: dict[str, Any], typed: set[str]) -> None:
    """Refuse a key that duplicates a typed option (``typed``: their names), a key calm_rag
    sets itself, and a key the installed vLLM does not know."""
    known = engine_arg_names()
    for key in engine_kwargs:
        field = f"engine_kwargs.{key}"
        if key in typed or key in RENAMED:
            option = RENAMED.get(key, key)
            raise InputError(f"duplicates the option {option}", field=field,
                             hint=f"set generator.options.{option} instead")
        if key in RESERVED:
            raise InputError("is set by calm_rag", field=field, hint=RESERVED[key])
        if known is not None and key not in known:
            close = sorted(k for k in known if _similar(k, key))[:5]
            raise InputError("is not an argument of the installed vLLM's engine", field=field,
                             hint=f"did you mean {', '.join(close)}?" if close else
                             "see vLLM's engine arguments (vllm serve --help=all)")


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.75


def check_quantization(method: str | None) -> None:
    if method is None:
        return
    known = quantization_methods()
    if not method.strip() or (known is not None and method not in known):
        raise InputError(f"{method!r} is not a quantization method of the installed vLLM",
                         field="quantization",
                         hint=f"use one of {', '.join(known)}" if known else None)


def check_ray_address(address: str | None) -> None:
    if address is not None and not RAY_ADDRESS.fullmatch(address):
        raise InputError(f"{address!r} is not a Ray address", field="ray_address",
                         hint="use local (a cluster started here), auto (the cluster this "
                              "node belongs to), host:port or ray://host:port")


def rank_cpus(rank: int, ranks: int) -> list[int] | None:
    """The cores of data-parallel ``rank`` out of ``ranks`` engines on this machine: contiguous
    equal shares of the cores this process may use; None when there are fewer cores than
    engines (they then share them all)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // ranks
    return cores[rank * share : (rank + 1) * share] if share else None


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use (CUDA_VISIBLE_DEVICES, else all NVML counts)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip()]
    try:  # NVML counts without starting CUDA here (a child must choose its devices first)
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no driver, no GPU: the engines run on the CPU
        return []


def rank_shares(ranks: int, world: int) -> list[dict[str, Any]]:
    """Each data-parallel engine's ``devices`` (``world`` GPUs) or ``cpus`` on this machine."""
    gpus = visible_gpus()
    if not gpus:
        return [{"devices": None, "cpus": rank_cpus(rank, ranks)} for rank in range(ranks)]
    if len(gpus) < ranks * world:
        raise InputError(f"{ranks} engines of {world} GPUs need {ranks * world} GPUs, "
                         f"{len(gpus)} are visible", field="generator.options.data_parallel_size",
                         hint="lower data_parallel_size (or tensor/pipeline_parallel_size), or "
                              "set ray_address to use a cluster's")
    return [{"devices": gpus[rank * world : (rank + 1) * world], "cpus": None}
            for rank in range(ranks)]


def take_rank_share(devices: Sequence[str] | None, cpus: Sequence[int] | None) -> None:
    """In an engine's process, before torch chooses: keep to the rank's GPUs or CPU cores."""
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    if cpus and hasattr(os, "sched_setaffinity"):
        # Two engines on the same cores would each run all their threads on all of them.
        os.sched_setaffinity(0, cpus)
        os.environ["OMP_NUM_THREADS"] = str(len(cpus))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(len(cpus))


def scale_args(options: Any, on_cpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` arguments for the parallelism, model and engine options (``VLLMOptions``);
    ``engine_kwargs`` last (they win over calm_rag's own settings, such as
    enable_chunked_prefill)."""
    world = options.tensor_parallel_size * options.pipeline_parallel_size
    executor = options.distributed_executor_backend
    if executor is None:  # one process on CPU (one_process_on_cpu) unless the model is split
        executor = ("uni" if world == 1 else "mp") if on_cpu else None
    return {"tensor_parallel_size": options.tensor_parallel_size,
            "pipeline_parallel_size": options.pipeline_parallel_size,
            "distributed_executor_backend": executor, "quantization": options.quantization,
            "revision": options.revision, "max_num_seqs": options.max_num_seqs,
            "trust_remote_code": options.trust_remote_code, **options.engine_kwargs}


def one_process_on_cpu() -> None:
    """Run vLLM's engine core and its worker in this process, on every core.

    By default vLLM puts its scheduler in a process of its own, which spins while it waits, and
    keeps one core for it out of the model's threads: on 2 cores the model ran on one. In one
    process nothing spins and the model gets both: on 2 cores sampling ran 1.8x faster
    (186 -> 349 tok/s), the engine started in 9 s instead of 22 and stopped in 1.5 s instead
    of 5. The user's own settings of these variables win.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def compile_grammars_in_step(llm: Any) -> bool:
    """Make the engine compile each request's grammar when the request is added, not in a
    thread beside the scheduler; whether it could (the engine core runs in this process).

    vLLM compiles structured-output grammars in a thread pool and schedules a request only once
    its grammar is ready, so which requests share a batch step depends on thread timing, and a
    token's logits on its batch: two fresh engines sampled 23 of the same 216 forced-answer
    texts differently (SmolLM2-135M, vLLM-CPU 0.32.0), none without forced answers. vLLM
    compiles in step only under ``external_launcher`` and offers no option for it; the
    attribute it checks is set here, and an engine without it (a core in another process, a
    vLLM that renamed it) is reported, not guessed at.
    """
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    manager = getattr(core, "structured_output_manager", None)
    if manager is None or not hasattr(manager, "_use_async_grammar_compilation"):
        return False
    manager._use_async_grammar_compilation = False
    return True


def request_params(params: SamplingParams, prompt: list[int], pattern: str | None = None
                   ) -> Any:
    """vLLM's ``SamplingParams`` for one prompt of a call with ``params`` (ours).

    Greedy decoding asks for one sequence (its ``n`` copies are identical). The seed comes from
    the call's seed and the prompt's tokens: a prompt's texts depend on nothing else, and the
    prompts of a call draw independent streams (one stream for all would correlate the samples
    of a question's languages). ``pattern``, a regex, constrains the response.
    """
    from vllm import SamplingParams as VLLMParams
    from vllm.sampling_params import StructuredOutputsParams

    digest = hashlib.blake2b(f"{params.seed}:{prompt}".encode(), digest_size=4).digest()
    cuts = {} if params.greedy else {"top_p": params.top_p, "top_k": params.top_k or 0,
                                     "min_p": params.min_p or 0.0}
    return VLLMParams(n=1 if params.greedy else params.n, temperature=params.temperature,
                      max_tokens=params.max_tokens, seed=int.from_bytes(digest, "little"),
                      stop=list(params.stop) or None, **cuts,
                      structured_outputs=(StructuredOutputsParams(regex=pattern)
                                          if pattern else None))


def forward_progress(progress: Progress) -> Any:
    """A tqdm class for ``LLM.generate`` that draws nothing and tells the parent of each
    finished prompt (the parent draws the bar, in a terminal or a notebook).

    vLLM also wraps the prompts it renders in this class (an iterable, which tqdm updates in
    batches as it goes): those updates are not finished prompts, and counted as such the bar
    read 76/72."""
    import io

    from tqdm import tqdm

    class Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.finishes = not args and kwargs.get("iterable") is None
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})

        def update(self, n: float | None = 1) -> bool | None:
            if self.finishes:
                progress(1)  # vLLM calls it once per finished prompt
            return super().update(n)

    return Forward
