"""What every bench/results file made by a script says first: the command, the date, the
commit, the CPU flags and the load average, so that each figure says where and when it was
measured (the machine is shared: the load says how busy it was)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def commit(where: Path = REPO) -> str:
    """The commit of ``where``'s checkout, with ``(local changes)`` when it had some."""
    from calm_rag.runtime.provenance import git_state

    state = git_state(where)
    if state is None:
        return "unknown (not a git checkout)"
    return state["commit"] + (" (local changes)" if state["dirty"] else "")


def header(title: str, command: str, started_load: str, revision: str | None = None
           ) -> list[str]:
    """The file's first lines: title, command, date, commit (``revision``, taken when the
    measure started, or now), CPU, load at the start and now."""
    from retrieval_scale import cpu_flags

    return [f"# {title}", "",
            f"Command: `{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"commit {revision or commit()}.", "",
            f"CPU: {cpu_flags()} (`/proc/cpuinfo`), shared with other work; load average "
            f"(1, 5, 15 min) {started_load} at the start, {load_average()} at the end.", ""]


def write_results(path: Path, lines: list[str]) -> None:
    """Print the file and write it whole (a reader never sees half of it)."""
    from calm_rag.io import atomic_write

    text = "\n".join(lines).rstrip("\n") + "\n"
    print(text, flush=True)
    with atomic_write(path) as handle:
        handle.write(text)
