"""The ``vllm`` backend's options checked against the installed vLLM, without importing it.

Importing vLLM takes 10-15 s, too long for loading a config (``calm-rag run --check``), so the
names vLLM accepts are read from its source: the fields of ``EngineArgs``, the parameters of
``LLM.__init__`` and the ``QuantizationMethods`` literal. Where that source cannot be read (vLLM
missing, or moved things around) the check is skipped and vLLM itself refuses a wrong name when
the engine starts.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError

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
