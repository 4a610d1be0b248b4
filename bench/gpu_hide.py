"""Hide installed packages from a process, as if they were not installed: the GPU check's dry
run runs its steps so, without what the GPU machine lacks.

It imports nothing of calm_rag: the ``sitecustomize`` the dry run puts first on its children's
PYTHONPATH (the killed DPO child, ``accelerate launch`` and its rank) imports it at start-up.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ENV = "CALM_GPU_CHECK_BLOCKED"  # the hidden top-level modules, as a JSON list
SITECUSTOMIZE = """\
import sys
sys.path.insert(0, {bench!r})
import gpu_hide
sys.path.remove({bench!r})
gpu_hide.hide_from_env()
"""


def hide(modules: Iterable[str]) -> None:
    """Make the top-level ``modules`` unimportable: ``import`` raises ModuleNotFoundError and
    ``importlib.util.find_spec`` returns None, while ``name in sys.modules`` stays False
    (datasets imports tiktoken when that says True, so ``sys.modules[name] = None`` would not
    do). Every finder is wrapped so that none finds them."""
    hidden = frozenset(modules)
    sys.meta_path[:] = [_Hiding(finder, hidden) for finder in sys.meta_path]
    sys.path_importer_cache.clear()


def hide_from_env() -> None:
    """Hide what the parent's ``CALM_GPU_CHECK_BLOCKED`` names (nothing when unset)."""
    if os.environ.get(ENV):
        hide(json.loads(os.environ[ENV]))


def hide_in_children(modules: Iterable[str], folder: Path) -> bool:
    """Hide ``modules`` in every Python child started from now on, through a
    ``sitecustomize`` in ``folder`` put first on PYTHONPATH; False (nothing done) when the
    interpreter has a sitecustomize of its own, which this one would shadow."""
    import importlib.util

    if importlib.util.find_spec("sitecustomize") is not None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    bench = str(Path(__file__).resolve().parent)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(bench=bench),
                                             encoding="utf-8")
    os.environ[ENV] = json.dumps(sorted(set(modules)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return True


class _Hiding:
    """A meta path finder that finds what ``finder`` finds, except the ``hidden`` packages."""

    def __init__(self, finder: object, hidden: frozenset[str]) -> None:
        self.finder, self.hidden = finder, hidden

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.hidden:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(fullname, path, target) if find is not None else None

    def invalidate_caches(self) -> None:
        invalidate = getattr(self.finder, "invalidate_caches", None)
        if invalidate is not None:
            invalidate()

    def __getattr__(self, name: str) -> object:  # find_distributions and the like
        return getattr(self.finder, name)
