"""Progress bars for calm_rag's own work, quiet by default.

A bar appears only once its work has run for ``DELAY_S`` seconds. Where stderr is not a
terminal (a log file, a pipe, CI), tqdm's redrawn frames would pile up as noise, so a bar
becomes one plain line at its end instead (name, count, seconds), again only for work that
took ``DELAY_S`` or more. Other libraries' bars (model loading, dataset maps) are off unless
the command runs with ``-v``: :func:`quiet_third_party`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

DELAY_S = 2.0
"""Work shorter than this shows no bar and leaves no line."""

# huggingface_hub's switch also turns off transformers' bars ("Loading weights"); datasets
# (TRL's map bars) has its own, read when first imported; tqdm reads TQDM_DISABLE for every
# bar made without an explicit ``disable`` (TRL's reference log-probs bar, vLLM's own).
THIRD_PARTY_BARS_OFF = {"HF_HUB_DISABLE_PROGRESS_BARS": "1",
                        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
SET_HERE: set[str] = set()
"""The variables :func:`quiet_third_party` set (not the user): TQDM_DISABLE of ours does not
turn our own bars off."""


def progress_bar(desc: str, total: int | None = None, *, unit: str = "it", enabled: bool = True,
                 **options: Any) -> Any:
    """A tqdm-like bar for ``desc``: tqdm (shown after ``DELAY_S``) on a terminal or in a
    notebook, a :class:`StageLine` elsewhere, and a disabled tqdm when not ``enabled``.
    ``options`` go to tqdm (``bar_format``, ``mininterval``) and are moot for a line."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, desc=desc, unit=unit, disable=True)
    if live_display():
        users_off = bool(os.environ.get("TQDM_DISABLE")) and "TQDM_DISABLE" not in SET_HERE
        return tqdm(total=total, desc=desc, unit=unit, delay=DELAY_S, disable=users_off,
                    **options)
    return StageLine(desc, total, unit)


def live_display(stream: TextIO | None = None) -> bool:
    """Whether a redrawn bar is seen as one: a terminal, or a Jupyter kernel (tqdm.auto draws
    a widget there, although its stderr is not a terminal)."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


class StageLine:
    """The bar of a log: counts like tqdm, draws nothing, and writes one line when closed
    (if the work took ``DELAY_S`` or more), e.g. ``sampling r1/train: 4/4 prompt in 18.1 s``."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it",
                 stream: TextIO | None = None, delay: float = DELAY_S) -> None:
        self.desc, self.total, self.unit, self.n = desc, total, unit, 0
        self.postfix = ""
        self.stream, self.delay = stream, delay
        self.started = time.perf_counter()
        self.closed = False

    def update(self, n: float = 1) -> None:
        self.n += int(n)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """tqdm's, which the embedder's conversion calls for its step (a fresh CALM_RAG_HOME
        in a log stopped there without it)."""
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw (tqdm's API)."""

    def line(self, seconds: float) -> str:
        """The closing line: name, count (of the total when known), seconds, postfix."""
        extra = f" ({self.postfix})" if self.postfix else ""
        if self.total is None and not self.n:  # a wait, not a count ("starting vLLM")
            return f"{self.desc}: {seconds:.1f} s{extra}"
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        return f"{self.desc}: {count} {self.unit} in {seconds:.1f} s{extra}"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = time.perf_counter() - self.started
        if seconds >= self.delay:
            print(self.line(seconds), file=self.stream or sys.stderr, flush=True)

    def __enter__(self) -> StageLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet_third_party(verbose: bool) -> None:
    """Turn other libraries' progress bars off unless ``verbose`` (a user's own setting of the
    variables wins). Set in the environment, so child processes (vLLM's engine) follow."""
    if verbose:
        return
    for name, value in THIRD_PARTY_BARS_OFF.items():
        if name not in os.environ:
            os.environ[name] = value
            SET_HERE.add(name)
    # Already imported (a notebook, or a test calling main() twice): they read the variables
    # at import, so tell them directly.
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "datasets" in sys.modules and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
        from datasets.utils import disable_progress_bars as disable_datasets_bars

        disable_datasets_bars()
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
