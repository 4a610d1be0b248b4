"""Plugins: Python modules an experiment names, imported so that their parts register.

``plugins: [my_metrics, ./toy_dataset.py]`` imports a module by name (from ``sys.path``) or a
file relative to the experiment file. A plugin is code the experiment's author chose to run,
exactly like ``--include-path`` of lm-evaluation-harness.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError

log = logging.getLogger(__name__)

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
            except Exception as err:  # the plugin's own error, on one line (-v: traceback)
                del sys.modules[module]
                raise _failed(err, module, (file,)) from None
            except BaseException:  # an interrupt or exit is not the plugin's error to report
                del sys.modules[module]
                raise
        return str(file)
    if not _MODULE.fullmatch(name):
        raise InputError(f"{name!r} is neither a module name nor a .py file",
                         hint="e.g. my_plugins.metrics or ./my_plugin.py")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(f"{err.name}.")):
            raise InputError(f"cannot import plugin {name!r}: {err}",
                             hint="a module on sys.path or a .py file") from None
        raise _failed(err, name, _module_files(name)) from None  # the plugin's own import
    except Exception as err:
        raise _failed(err, name, _module_files(name)) from None
    return name


def _failed(err: Exception, module: str, files: tuple[Path, ...]) -> InputError:
    """The plugin's error as one line: where in the plugin it happened and its message. The
    registrations it made before failing are undone, so the fixed plugin imports again in
    the same process (a notebook); its traceback is logged for ``calm-rag -v``."""
    from calm_rag.registries import ALL

    log.info("plugin %s failed to import", files[0] if files else module, exc_info=err)
    for registry in ALL.values():
        registry.unregister_module(module)
    where = _where(err, files)
    text = err.msg if isinstance(err, SyntaxError) else str(err)
    message = f"{type(err).__name__}: {' '.join(text.split())}"  # one line, whatever it was
    return InputError(f"plugin {where} failed: {message}",
                      hint="fix the plugin; calm-rag -v shows its traceback")


def _where(err: Exception, files: tuple[Path, ...]) -> str:
    """``file:line`` of the plugin's line that failed: the innermost frame in the plugin's
    own files (a part it registered, an import), else the innermost outside calm_rag."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    own = [f for f in frames if any(_within(f.filename, file) for file in files)]
    ours = Path(__file__).resolve().parent
    outside = [f for f in frames if not f.filename.startswith("<")
               and not _within(f.filename, ours)]
    for chosen in (own, outside):
        if chosen:
            return f"{chosen[-1].filename}:{chosen[-1].lineno}"
    return str(files[0]) if files else "?"


def _within(filename: str, place: Path) -> bool:
    """Whether ``filename`` is the file ``place`` or lies in the folder ``place``."""
    path = Path(filename).resolve()
    return path == place or place in path.parents


def _module_files(name: str) -> tuple[Path, ...]:
    """Where module ``name`` lives: its file, or its package's folder."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # noqa: BLE001 - a parent package that fails to import: no files known
        return ()
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return ()
    origin = Path(spec.origin).resolve()
    return (origin.parent,) if spec.submodule_search_locations else (origin,)
