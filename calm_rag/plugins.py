"""Plugins: Python modules an experiment names, imported so that their parts register.

``plugins: [my_metrics, ./toy_dataset.py]`` imports a module by name (from ``sys.path``) or a
file relative to the experiment file. A plugin is code the experiment's author chose to run,
exactly like ``--include-path`` of lm-evaluation-harness.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_plugins(values: Any, path: Path, lines: dict[str, int],
                   overrides: dict[str, str] | None = None) -> list[str]:
    """Import each plugin; return them as the resolved config keeps them (files absolute)."""
    overrides = overrides or {}
    where = {"path": f"--set {overrides['plugins']}"} if "plugins" in overrides else {
        "path": path}
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InputError("expected a list of module names or .py files", field="plugins",
                         line=lines.get("plugins"), **where)
    resolved = []
    for i, value in enumerate(values):
        line = None if "plugins" in overrides else lines.get(f"plugins[{i}]")
        try:
            resolved.append(import_plugin(value, path.resolve().parent))
        except InputError as err:
            raise InputError(err.message, field=f"plugins[{i}]", line=line, hint=err.hint,
                             **where) from None
    return resolved


def import_plugin(name: str, base_dir: Path) -> str:
    """Import one plugin (once per process); return its module name or absolute file."""
    if name.endswith(".py"):
        file = Path(name).expanduser()
        file = (file if file.is_absolute() else base_dir / file).resolve()
        if not file.is_file():
            raise InputError(f"no plugin file {file}", hint="a .py file, relative to the "
                             "experiment file, or a module name")
        module = f"calm_rag_plugin_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
        if module not in sys.modules:
            spec = importlib.util.spec_from_file_location(module, file)
            if spec is None or spec.loader is None:
                raise InputError(f"cannot import {file}", hint="a .py file")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[module] = loaded
            try:
                spec.loader.exec_module(loaded)
            except (ImportError, SyntaxError) as err:  # other errors keep their traceback
                del sys.modules[module]
                raise InputError(f"importing {file} failed: {type(err).__name__}: {err}",
                                 hint="fix the plugin") from None
            except BaseException:
                del sys.modules[module]
                raise
        return str(file)
    if not _MODULE.fullmatch(name):
        raise InputError(f"{name!r} is neither a module name nor a .py file",
                         hint="e.g. my_plugins.metrics or ./my_plugin.py")
    try:
        importlib.import_module(name)
    except ImportError as err:
        raise InputError(f"cannot import plugin {name!r}: {err}",
                         hint="a module on sys.path or a .py file") from None
    return name
