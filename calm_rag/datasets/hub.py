"""Rows of a hub dataset, or of a local copy of one, through ``datasets``.

Both go through ``datasets``: the hub id with its config, split and revision, or ``data.path``
holding a local copy (a ``save_to_disk`` folder, parquet / jsonl / csv files, or a clone of the
hub repository). Without network a hub id fails at once, on one line saying how to point at a
local copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calm_rag.errors import InputError

if TYPE_CHECKING:
    from calm_rag.datasets.entry import DatasetEntry

_LOCAL_HINT = ("no network? point data.path at a local copy: a save_to_disk folder, parquet "
               "files, or a clone of the hub repository ({lang} for one per language)")
_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def hub_rows(entry: DatasetEntry, code: str, data: Any, base_dir: Path
             ) -> tuple[str, Iterator[tuple[int, dict[str, Any]]]]:
    """Where one language's rows come from, and the rows as ``(row number, row)``."""
    config = entry.config.replace("{lang}", code) if entry.config else None
    if data.path:
        local = Path(data.path.replace("{lang}", code))
        local = local if local.is_absolute() else Path(os.path.normpath(base_dir / local))
        where = str(local)
        shared = "{lang}" not in data.path
        if shared and len(data.languages) > 1 and not (local.is_dir() and config
                                                        and _is_clone(local)):
            # One saved copy or file read for every language would vote a set with itself.
            raise InputError("one local copy for several languages", path=local,
                             field="data.path", hint="put {lang} in data.path: one copy per "
                             "language (or give a clone of the hub repository)")
        dataset = open_local(local, config if shared else None, entry.split, field="data.path")
    else:
        assert entry.name is not None  # DatasetEntry requires it for the hub loader
        where, dataset = open_hub(entry.name, config, entry.split, entry.revision)
    return where, ((i + 1, dict(row)) for i, row in enumerate(dataset))


def open_hub(name: str, config: str | None, split: str, revision: str | None, *,
             streaming: bool = False, hint: str = _LOCAL_HINT) -> tuple[str, Any]:
    """Where a hub split is read from, and the split (an ``IterableDataset`` when
    ``streaming``: rows arrive as they are downloaded, nothing is loaded whole). ``hint``:
    what a failure's message tells the user to do."""
    where = f"hub:{name}" + (f"/{config}" if config else "") + f"/{split}"
    go_offline_without_network()
    return where, _call(where, lambda load: load(name, config, split=split, revision=revision,
                                                 streaming=streaming), hint)


def go_offline_without_network() -> None:
    """Without network, ``datasets`` retries every request for half a minute before failing;
    one quick request (through huggingface_hub's session, its proxies included) tells, and
    offline mode then reads the local cache or fails at once."""
    from calm_rag.models.references import hub_reachable

    if not hub_reachable():
        import datasets.config
        import huggingface_hub.constants

        datasets.config.HF_HUB_OFFLINE = True
        huggingface_hub.constants.HF_HUB_OFFLINE = True


def _is_clone(path: Path) -> bool:
    """A repository clone (configs in its README), not a ``save_to_disk`` folder."""
    return not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def open_local(path: Path, config: str | None, split: str, *, field: str,
               streaming: bool = False) -> Any:
    """A local copy of a hub dataset (a ``save_to_disk`` folder, a parquet/jsonl/json/csv
    file, or a clone of the hub repository) read through the same ``datasets`` calls."""
    if not path.exists():
        raise InputError("no such file or folder", path=path, field=field,
                         hint="a local copy of the hub dataset")
    where = str(path)
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        from datasets import DatasetDict, load_from_disk

        saved = _guard(where, lambda: load_from_disk(str(path)))
        if isinstance(saved, DatasetDict):
            if split not in saved:
                raise InputError(f"no split {split!r} (it has {', '.join(saved)})", path=path,
                                 field="split")
            saved = saved[split]
        # A saved copy is memory-mapped Arrow: iterating it never loads it whole either.
        return saved.to_iterable_dataset() if streaming else saved
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise InputError("not a parquet, jsonl, json or csv file", path=path, field=field)
        return _call(where, lambda load: load(builder, data_files=str(path), split="train",
                                              streaming=streaming))
    return _call(where, lambda load: load(str(path), config, split=split, streaming=streaming))


def _call(where: str, fn: Any, hint: str | None = None) -> Any:
    import logging

    from datasets import load_dataset

    # Without network huggingface_hub logs each failed request as a warning; the one line of
    # the InputError says it instead.
    quiet = [logging.getLogger(name) for name in ("huggingface_hub", "datasets")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        return _guard(where, lambda: fn(load_dataset), hint)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def _guard(where: str, fn: Any, hint: str | None = None) -> Any:
    """``datasets`` raises many types (ConnectionError, ValueError, FileNotFoundError, its own):
    all of them are input that could not be read here."""
    try:
        return fn()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - a third-party loader's failures are input errors
        text = " ".join(str(err).split())[:300] or type(err).__name__
        hint = hint or (_LOCAL_HINT if where.startswith("hub:") else None)
        raise InputError(f"cannot load the dataset: {text}", path=where, hint=hint) from None
