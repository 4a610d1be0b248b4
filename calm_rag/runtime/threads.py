"""How many CPU threads torch uses: sampling, scoring and training share one rule."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_cores() -> int:
    """The cores this process may run on (its affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run torch on ``count`` threads (default: the cores available), then restore the
    process-wide setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count or available_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
