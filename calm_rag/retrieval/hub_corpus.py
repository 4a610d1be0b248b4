"""Corpora read through ``datasets``: a hub id streamed, or a local copy laid out as the hub.

``type: hub`` in an index spec names a hub dataset (``name``, ``config``, ``split``,
``revision``) and its columns (``id_field``, ``text_field``, ``title_field``). Rows are
streamed (``load_dataset(..., streaming=True)``): a corpus of millions of passages is read as
it downloads, never loaded whole. ``path`` points at a local copy instead (a clone of the hub
repository, parquet or jsonl files, a ``save_to_disk`` folder), read by the same calls, so the
tests and a machine without network take the hub's code path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.runtime.provenance import files_digest, json_digest

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PIN_HINT = ("pin the source's revision to a commit (40 hex digits), or point its path at a "
             "local copy of the dataset")


_COPY_HINT = ("no network? point {key}.path at a local copy: a clone of the hub repository, "
              "its parquet or jsonl files, or a save_to_disk folder")


@dataclass(frozen=True)
class HubCorpus:
    """Where a ``type: hub`` corpus source reads its rows (the first argument of its reader)."""

    name: str | None
    config: str | None
    split: str
    revision: str | None
    local: Path | None
    """A local copy given as the source's ``path``, read instead of the hub."""
    id_field: str
    text_field: str | None
    title_field: str | None
    limit: int | None
    field: str
    """The spec key of this source (``corpus[0]``), for errors."""

    def __str__(self) -> str:
        if self.local is not None:
            return str(self.local)
        return (f"hub:{self.name}" + (f"/{self.config}" if self.config else "")
                + f"/{self.split}" + (f"@{self.revision}" if self.revision else ""))

    def exists(self) -> bool:
        return self.local is None or self.local.exists()

    def digest(self) -> str:
        """What the rows depend on: the local copy's files, or the hub commit (resolved once
        when the revision is a branch or absent, so a moved branch rebuilds the index)."""
        described = {"config": self.config, "split": self.split, "id": self.id_field,
                     "text": self.text_field, "title": self.title_field, "limit": self.limit}
        if self.local is not None:
            described["files"] = files_digest(_copy_files(self.local))
        else:
            described |= {"name": self.name, "commit": self._commit()}
        return json_digest(described)

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row number, row)`` in the dataset's order, streamed."""
        from calm_rag.datasets.hub import open_hub, open_local

        if self.local is not None:
            dataset = open_local(self.local, self.config, self.split, field=f"{self.field}.path",
                                 streaming=True)
        else:
            assert self.name is not None  # CorpusSource requires name or path
            _, dataset = open_hub(self.name, self.config, self.split, self.revision,
                                  streaming=True, hint=_COPY_HINT.format(key=self.field))
        for number, row in enumerate(_guarded(dataset, str(self)), start=1):
            if self.limit is not None and number > self.limit:
                return
            if number == 1:
                self._check_columns(row)
            yield number, dict(row)

    def check(self) -> None:
        """Read the first row now: a source that cannot be read or names a column its rows
        lack stops before any model is loaded."""
        if next(self.rows(), None) is None:
            raise InputError("the dataset has no rows", path=str(self))

    def _check_columns(self, row: dict[str, Any]) -> None:
        """A wrong mapping is one error naming the key and the columns there are, not a
        missing field later."""
        named = {"id_field": self.id_field, "text_field": self.text_field,
                 "title_field": self.title_field}
        for key, column in named.items():
            if column is not None and column not in row:
                raise InputError(f"no column {column!r} (the rows have "
                                 f"{', '.join(map(str, row))})", path=str(self), line=1,
                                 field=f"{self.field}.{key}")

    def _commit(self) -> str:
        if self.revision and _COMMIT.match(self.revision):
            return self.revision
        from calm_rag.datasets.hub import go_offline_without_network

        go_offline_without_network()
        try:
            from huggingface_hub import HfApi

            info = HfApi().dataset_info(self.name or "", revision=self.revision)
        except Exception as err:  # noqa: BLE001 - offline, unknown repo, private: all input
            text = " ".join(str(err).split())[:200] or type(err).__name__
            raise InputError(f"cannot resolve the hub revision: {text}", path=str(self),
                             field=f"{self.field}.revision", hint=_PIN_HINT) from None
        return str(info.sha)


def _copy_files(folder: Path) -> list[tuple[str, Path]]:
    """The data files of a local copy (a repository clone's ``.git`` and caches left out)."""
    if folder.is_file():
        return [(folder.name, folder)]
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise InputError("the folder holds no files", path=folder, hint=_PIN_HINT)
    return [(p.relative_to(folder).as_posix(), p) for p in files]


def _guarded(dataset: Any, where: str) -> Iterator[Any]:
    """Rows of a streamed dataset: its read errors (a broken shard, a dropped connection)
    surface while iterating, and are input errors naming the source."""
    iterator = iter(dataset)
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - a third-party reader's failures are input
            text = " ".join(str(err).split())[:300] or type(err).__name__
            raise InputError(f"cannot read the dataset: {text}", path=where) from None
        yield row


def hub_source(source: Any, base_dir: Path, index: int) -> HubCorpus:
    """The :class:`HubCorpus` of one ``type: hub`` source of a spec (``path`` resolved)."""
    from calm_rag.retrieval.spec import expand_env, resolve_path

    # ``path: ${MEDRAG_TEXTBOOKS:-}``: a local copy when the variable is set, else the hub.
    given = expand_env(source.path).strip() if source.path else ""
    local = Path(os.path.normpath(resolve_path(given, base_dir))) if given else None
    if local is None and not source.name:
        raise InputError("no hub id (name) and the path is empty", field=f"corpus[{index}].path")
    return HubCorpus(name=source.name, config=source.config, split=source.split,
                     revision=source.revision, local=local, id_field=source.id_field,
                     text_field=source.text_field, title_field=source.title_field,
                     limit=source.limit, field=f"corpus[{index}]")
