"""The one writer of a user's output folder (``--out``): our files beside theirs, all or none.

It creates the folder when absent and never replaces it: each file is staged inside the folder,
then renamed into place one by one, the previous version of each kept until every rename has
succeeded (and put back if one fails). A file already there is replaced only when it is ours
(its name is in the marker file of names we wrote there) or is a JSON file we merge into
(LLaMA-Factory's ``dataset_info.json``: the user's entries are kept). Names are plain file
names, so nothing is written outside the folder, and a folder that is or holds an input is
refused, so an input is never overwritten by its own outputs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io.read import read_json_object
from calm_rag.io.write import usual_mode, write_json

MARKER = ".calm-rag-outputs.json"
"""Names of the files calm-rag wrote into a folder (which it may therefore replace)."""
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def safe_name(name: str, *, field: str | None = None) -> str:
    """``name`` if it is a plain file name (no folder part, no ``..``); else InputError."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise InputError(f"{name!r} is not a plain file name (letters, digits, . _ + -)",
                         field=field)
    return name


class OutputFolder:
    """The files of one output being staged; see :func:`output_folder`."""

    def __init__(self, out: Path, staging: Path, owned: set[str], field: str) -> None:
        self.out, self.staging, self.owned, self.field = out, staging, owned, field
        self.names: list[str] = []
        self.merged: set[str] = set()

    def path(self, name: str) -> Path:
        """Where to write our file ``name`` now; it lands in the folder when all succeed."""
        safe_name(name)
        target = self.out / name
        if (target.exists() or target.is_symlink()) and name not in self.owned:
            raise InputError(f"{name} is already there and was not written by calm-rag",
                             path=self.out, field=self.field,
                             hint="choose another folder, or move that file away")
        self._add(name)
        return self.staging / name

    def merge_json(self, name: str, entries: dict[str, Any]) -> dict[str, Any]:
        """Stage ``name`` as the folder's JSON object with ``entries`` added or replaced."""
        safe_name(name)
        target = self.out / name
        current: dict[str, Any] = {}
        if target.exists() or target.is_symlink():
            try:
                current = read_json_object(target)
            except InputError as err:
                raise InputError(f"cannot merge into it: {err.message}", path=target,
                                 line=err.line, hint="fix or move it; nothing was written"
                                 ) from None
        merged = {**current, **entries}
        write_json(self.staging / name, merged)
        self._add(name)
        self.merged.add(name)
        return merged

    def _add(self, name: str) -> None:
        if name in self.names or name == MARKER:
            raise InputError(f"{name} is written twice", path=self.out, field=self.field)
        self.names.append(name)


@contextlib.contextmanager
def output_folder(out: str | Path, *, inputs: Iterable[str | Path] = (),
                  field: str = "--out") -> Iterator[OutputFolder]:
    """Stage files for ``out``; when the block succeeds, put them all in place.

    ``inputs`` are the files and folders read: ``out`` may be neither one nor hold one.
    """
    out = Path(out)
    refuse_inputs(out, inputs, field)
    staging = _make_staging(out, field)
    try:
        folder = OutputFolder(out, staging, _owned(out), field)
        yield folder
        ours = sorted((folder.owned | set(folder.names)) - folder.merged)
        write_json(staging / MARKER, {"written_by": "calm-rag", "files": ours})
        _commit(out, staging, [*folder.names, MARKER])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def refuse_inputs(out: Path, inputs: Iterable[str | Path], field: str = "--out") -> None:
    """An output that is an input, or holds one, would overwrite what it reads."""
    where = _resolved(out, field)
    for given in inputs:
        source = _resolved(Path(given), "input")
        if source == where:
            raise InputError("is the input itself; give a folder of its own", path=out,
                             field=field)
        if where in source.parents:
            raise InputError(f"holds the input {given}; give a folder of its own", path=out,
                             field=field)


def _resolved(path: Path, field: str) -> Path:
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 reports a symlink loop so
        raise InputError("is a symbolic link that points back to itself", path=path,
                         field=field) from None


def _make_staging(out: Path, field: str) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError("is a file; expected a folder", path=out, field=field) from None
    except OSError as err:
        raise InputError(f"cannot create the folder: {err.strerror}", path=out,
                         field=field) from None
    try:
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".calm-rag-", suffix=".tmp"))
        usual_mode(staging, directory=True)
    except OSError as err:
        raise InputError(f"cannot write into the folder: {err.strerror}", path=out,
                         field=field) from None
    return staging


def _owned(out: Path) -> set[str]:
    """The names the marker says we wrote; a damaged marker owns nothing (refuse, not guess)."""
    marker = out / MARKER
    if not marker.is_file():
        return set()
    try:
        files = read_json_object(marker).get("files", [])
    except InputError:
        return set()
    return {name for name in files if isinstance(name, str)} if isinstance(files, list) else set()


def _commit(out: Path, staging: Path, names: list[str]) -> None:
    """Rename each staged file into place, keeping what it replaces until all have moved."""
    backups = staging / ".previous"
    backups.mkdir()
    moved: list[tuple[str, bool]] = []  # (name, whether a previous file was set aside)
    try:
        for name in names:
            target = out / name
            had = target.exists() or target.is_symlink()
            if had:
                os.replace(target, backups / name)
            moved.append((name, had))
            os.replace(staging / name, target)
    except BaseException:
        _restore(out, staging, backups, moved)
        raise


def _restore(out: Path, staging: Path, backups: Path, moved: list[tuple[str, bool]]) -> None:
    for name, had in reversed(moved):
        target = out / name
        with contextlib.suppress(OSError):
            if not (staging / name).exists():  # ours went in: take it out again
                target.unlink()
            if had:
                os.replace(backups / name, target)
