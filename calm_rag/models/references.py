"""Model references: what a model name may be, checked before anything is loaded.

A model is named by a default's short name, a local folder, or a hub id (``owner/name``). A
reference that can be none of these (a file, an empty folder, a relative name that is neither a
folder nor a hub id) fails at once, at config load time, without torch and without network.
A hub id keeps the hub's normal path, but a hub that cannot be reached fails in seconds with one
line (transformers would retry every file for minutes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from calm_rag.errors import InputError

T = TypeVar("T")

# The hub's rules for repo ids: letters, digits, '-', '_', '.'; no '--' or '..'; at most 96.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"{_PART}/{_PART}")
HUB_TIMEOUT_S = 3.0
# A model folder holds one of these (transformers, sentence-transformers, a PEFT adapter).
MODEL_MARKERS = ("config.json", "modules.json", "adapter_config.json")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with the characters the hub allows (not a path-like name)."""
    return (bool(_HUB_ID.fullmatch(name)) and len(name) <= 96
            and ".." not in name and "--" not in name)


def check_reference(name: str, *, defaults: Collection[str] = (),
                    field: str | None = None) -> None:
    """Raise a one-line :class:`InputError` unless ``name`` is one of ``defaults`` (short
    names prepared locally), a non-empty model folder, or a hub id. No torch, no network.

    :func:`calm_rag.models.check_model_reference` is this with calm_rag's defaults.
    """
    hint = ("give a local model folder, a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, "
            "or a default that `calm-rag models list` shows")
    if not isinstance(name, str) or not name.strip():
        raise InputError("the model name is empty", field=field, hint=hint)
    path = Path(name).expanduser()
    if name in defaults and not path.exists():
        return
    if path.is_dir():
        if not any(path.iterdir()):
            raise InputError(f"the model folder {name} is empty", field=field,
                             hint="point at the folder that holds config.json and the weights")
        if not any((path / marker).is_file() for marker in MODEL_MARKERS) and not any(
                path.glob("*.gguf")):
            raise InputError(f"{name} is not a model folder (no config.json)", field=field,
                             hint=hint)
        return
    if path.exists():
        raise InputError(f"the model {name} is a file, not a model folder", field=field,
                         hint="point at the folder that holds it and its config.json")
    if name.startswith(("/", "./", "../", "~", ".\\")) or path.is_absolute():
        raise InputError(f"no such model folder: {name}", field=field, hint=hint)
    if not looks_like_hub_id(name):
        raise InputError(f"the model {name!r} is neither a local folder nor a hub id "
                         "(owner/name)", field=field, hint=hint)


def is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the model hub answers, asked the way huggingface_hub downloads: its offline mode
    (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) says no without a request, and the request goes
    through its HTTP session to HF_ENDPOINT, so HTTPS_PROXY, NO_PROXY and a client factory the
    user set count as they do for a download."""
    import httpx2
    from huggingface_hub import constants, get_session
    from huggingface_hub.errors import OfflineModeIsEnabled

    # The environment is read now too: the constant was read when huggingface_hub was imported.
    if constants.is_offline_mode() or any(
            os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        response = get_session().head(endpoint, timeout=timeout)
    except (httpx2.TransportError, OfflineModeIsEnabled, OSError):
        return False
    # A proxy that cannot reach the hub answers 502 or 504 itself.
    return response.status_code < 500


def unreachable(name: str, why: str | None = None, *, field: str | None = None) -> InputError:
    """The one-line error for a hub id that could not be loaded."""
    reason = f" ({why})" if why else ""
    return InputError(
        f"the model {name} is neither a local folder nor reachable on the hub{reason}",
        field=field,
        hint=f"where there is network, run `huggingface-cli download {name} --local-dir DIR` "
             "and set the model to DIR")


def in_hub_cache(name: str) -> bool:
    """Whether the local hub cache holds a snapshot of the model ``name`` (no network)."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def check_hub_available(name: str, *, field: str | None = None) -> None:
    """Raise the one-line :func:`unreachable` error now for a hub id that is neither a local
    folder nor in the local hub cache while the hub cannot be reached: a run checks this
    before it opens any stage entry, so the failure leaves nothing behind to sweep."""
    if is_local(name) or not looks_like_hub_id(name) or in_hub_cache(name):
        return
    if not hub_reachable():
        raise unreachable(name, "no network", field=field)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def from_local_or_hub(name: str, load: Callable[..., T], **kwargs: Any) -> T:
    """``load(name, **kwargs)`` (a ``from_pretrained``), with its failures as one line.

    A local folder loads as it is. A hub id is looked up in the local hub cache first; only if
    it is not there is the hub asked, and only if it answers at all: transformers would retry
    each file for minutes with no network.
    """
    if is_local(name) or kwargs.get("local_files_only"):
        try:
            return load(name, **kwargs)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot load the model {name}: {first_line(err)}",
                             hint="point at a complete transformers model folder") from None
    try:
        return load(name, **kwargs, local_files_only=True)
    except (OSError, ValueError):
        pass  # not in the local hub cache
    if not hub_reachable():
        raise unreachable(name, "no network")
    try:
        return load(name, **kwargs)
    except (OSError, ValueError) as err:
        raise unreachable(name, first_line(err)) from None
