"""A run's name: one folder name the runs folder's file system can hold (checked when the
experiment loads, so a run never computes everything and then fails to write its folder)."""

from __future__ import annotations

import os
from pathlib import Path

from calm_rag.errors import InputError


def check_run_name(name: str, runs_dir: str | Path | None = None) -> str:
    """A run's name is one folder name: no path separator, no ``..``, not hidden, and no
    longer than the file system under ``runs_dir`` (the working folder when not given) allows
    a name to be, so that a run never computes everything and then fails to write its folder."""
    if (not isinstance(name, str) or not name or "/" in name or "\\" in name
            or name.startswith(".") or "\0" in name):
        raise InputError(f"{name!r} is not a plain folder name (no '/', '\\' or leading '.')",
                         field="name", hint="runs go to <runs_dir>/<name>/<timestamp>/")
    limit = name_max(Path(runs_dir) if runs_dir is not None else Path.cwd())
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > limit:
        raise InputError(f"is {size} bytes long; the file system of the runs folder allows "
                         f"folder names of at most {limit} bytes", field="name",
                         hint="a shorter name")
    return name


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding ``folder`` (or its nearest
    existing parent) allows; 255, the usual figure, where it cannot say."""
    for place in (folder.absolute(), *folder.absolute().parents):
        if place.is_dir():
            try:
                return os.pathconf(place, "PC_NAME_MAX")
            except (OSError, ValueError, AttributeError):  # no pathconf here (Windows)
                break
    return 255
