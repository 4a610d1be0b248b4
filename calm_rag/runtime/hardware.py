"""What ``auto`` precision means on this machine: the one place that decides bf16 or float32.

bfloat16 pays only where the hardware multiplies in it: a GPU with bf16 support, or a CPU with
AVX512-BF16 or AMX (``avx512_bf16`` / ``amx_bf16`` in /proc/cpuinfo). There, bf16 matmuls ran
4x faster than float32 on 2 cores; on a CPU without them (AVX2 only) bf16 is emulated and ran
2.4x slower than float32 (vLLM: "Failed to create oneDNN linear, fallback to torch linear").
The vLLM and hf samplers, the log-prob scorer and training all ask :func:`auto_precision`.

Where the hf sampler and the scorer run is decided here too (:func:`resolve_device`): ``auto``
is the first GPU when torch sees one, else the CPU; a GPU asked for where there is none is the
user's to fix, named by its config key.

``CALM_RAG_BF16=0`` runs a bf16 machine as an AVX2 one (float32), ``CALM_RAG_BF16=1`` forces
bf16; unset (or empty), the hardware decides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from calm_rag.errors import InputError

ENV_VAR = "CALM_RAG_BF16"
"""The override: 1 (bf16) or 0 (float32); unset, the hardware decides."""

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of a CPU that multiplies bf16 natively."""

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
"""What a ``device`` option may say (N: a GPU's index)."""

DEVICE_MAPS = ("auto",)
"""What a ``device_map`` option may say besides null: ``auto`` (accelerate spreads the model
over the visible GPUs, then CPU memory)."""

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Precision:
    """The choice ``auto`` stands for, and why (the run manifest records both)."""

    bf16: bool
    reason: str

    @property
    def dtype(self) -> str:
        """The weights dtype of the samplers and the scorer: ``bfloat16`` or ``float32``."""
        return "bfloat16" if self.bf16 else "float32"

    def to_dict(self) -> dict[str, str]:
        return {"auto_dtype": self.dtype, "reason": self.reason}


def cpu_bf16_flags(cpuinfo: str) -> list[str]:
    """The bf16 flags on the ``flags`` lines of a /proc/cpuinfo text, in BF16_CPU_FLAGS order."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == "flags":
            flags.update(value.split())
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def auto_precision(environ: Mapping[str, str] | None = None, cpuinfo: str | None = None,
                   gpu: bool | None = None) -> Precision:
    """bf16 or float32 for ``auto``: the override first, then the GPU, then the CPU's flags.

    ``environ``, ``cpuinfo`` (a /proc/cpuinfo text) and ``gpu`` (whether CUDA is used) default
    to this machine's; tests pass their own.
    """
    environ = os.environ if environ is None else environ
    given = environ.get(ENV_VAR, "").strip()
    if given:
        if given.lower() in _YES:
            return Precision(True, f"{ENV_VAR}={given}")
        if given.lower() in _NO:
            return Precision(False, f"{ENV_VAR}={given}")
        raise InputError(f"{ENV_VAR}={given!r} is neither 0 nor 1", field=ENV_VAR,
                         hint="0 runs in float32, 1 in bfloat16; unset, the hardware decides")
    if gpu is None:
        gpu = _cuda_available()
    if gpu:
        import torch

        if torch.cuda.is_bf16_supported():
            return Precision(True, "the GPU supports bf16")
        return Precision(False, "the GPU has no bf16")
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return Precision(False, "no /proc/cpuinfo to read the CPU's flags from")
    found = cpu_bf16_flags(cpuinfo)
    if found:
        return Precision(True, f"the CPU has {' and '.join(found)}")
    return Precision(False, "the CPU has neither avx512_bf16 nor amx_bf16")


def resolve_dtype(dtype: str, gpu: bool | None = None) -> str:
    """``dtype`` with ``auto`` replaced by the hardware's choice (other names as given);
    ``gpu`` says whether the model runs on a GPU (default: whether torch sees one)."""
    return auto_precision(gpu=gpu).dtype if dtype == "auto" else dtype


def check_device(field: str, device: str, device_map: str | None = None) -> None:
    """A check for ``__post_init__``: ``device`` is one of :data:`DEVICES`, ``device_map`` null
    or one of :data:`DEVICE_MAPS` (whether the GPU exists is checked when the model loads).
    ``field`` names the device's key; the map's is its sibling ``device_map``."""
    map_field = field.removesuffix("device") + "device_map"
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise InputError(f"{device!r} is not a device", field=field,
                         hint=f"use one of {', '.join(DEVICES)}")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise InputError(f"{device_map!r} is not allowed", field=map_field,
                         hint="use auto (accelerate places the model) or null")
    if device_map is not None and device == "cpu":
        raise InputError("device_map: auto places the model on the GPUs, device says cpu",
                         field=map_field, hint="leave device_map null to run on the CPU")


def resolve_device(device: str, field: str = "device", gpus: int | None = None) -> str:
    """The torch device ``device`` stands for: ``auto`` is ``cuda`` when a GPU is visible,
    else ``cpu``; ``cuda`` and ``cuda:N`` must name a visible GPU. ``gpus`` (the number of
    visible GPUs) defaults to what torch sees; tests pass their own."""
    check_device(field, device)
    if device == "cpu":
        return device
    if gpus is None:
        gpus = _cuda_count()
    if device == "auto":
        return "cuda" if gpus else "cpu"
    index = int(device.partition(":")[2] or 0)
    if index >= gpus:
        seen = f"{gpus} GPU{'s' if gpus != 1 else ''}" if gpus else "no GPU"
        raise InputError(f"{device!r} asked for, torch sees {seen}", field=field,
                         hint="use auto or cpu here, or check CUDA_VISIBLE_DEVICES and that "
                              "torch was installed with CUDA")
    return device


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cuda_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def numa_nodes(root: Path = Path("/sys/devices/system/node")) -> int:
    """NUMA nodes with memory on this machine (1 where the kernel does not say): vLLM-CPU binds
    each tensor/pipeline-parallel worker to a node of its own."""
    try:
        found = [d for d in root.glob("node[0-9]*") if d.is_dir()]
    except OSError:
        return 1
    return len(found) or 1


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_count() -> int:
    """GPUs this process sees: CUDA_VISIBLE_DEVICES when set, else what torch counts."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return len([d for d in given.split(",") if d.strip() and d.strip() != "-1"])
    return _cuda_count()

