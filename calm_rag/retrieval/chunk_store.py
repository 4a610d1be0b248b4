"""The chunks of an index on disk, read by row: an Arrow IPC file and a language column.

``chunks.arrow`` holds one record batch per ``BATCH_ROWS`` consecutive chunks (zstd-compressed),
so the chunk of row ``r`` is in batch ``r // BATCH_ROWS``: a query's hits read a few batches
of a memory-mapped file, and opening reads only the file's footer. ``chunk_langs.npy`` holds
each chunk's language as a small integer (the codes are listed in the manifest), memory-mapped
for the language filter. Indexes built before this layout (``chunks.jsonl``, manifest format 1)
are read through :class:`JsonlChunks`, which keeps one offset per line.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.errors import InputError
from calm_rag.retrieval.chunking import Chunk

BATCH_ROWS = 1024
COLUMNS = ("id", "doc_id", "lang", "title", "text", "source")
LANG_DTYPE = np.uint16


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name in COLUMNS])


class ChunkWriter:
    """Streams chunks into ``chunks.arrow`` and their languages into ``chunk_langs.npy``."""

    def __init__(self, path: Path, langs_path: Path) -> None:
        import pyarrow as pa

        self.path, self.langs_path = path, langs_path
        self._sink = pa.OSFile(str(path), "wb")
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        self._writer = pa.ipc.new_file(self._sink, _schema(), options=options)
        self._pending: list[Chunk] = []
        self._langs: list[int] = []  # 2 bytes a chunk in numpy; lists only per batch
        self._codes: dict[str, int] = {}
        self._lang_parts: list[np.ndarray] = []
        self.rows = 0

    @property
    def languages(self) -> list[str]:
        """The language codes, in the order of their integer codes."""
        return list(self._codes)

    def add(self, chunk: Chunk) -> None:
        if chunk.row != self.rows:
            raise ValueError(f"chunk row {chunk.row} written as row {self.rows}")
        self._pending.append(chunk)
        self._langs.append(self._codes.setdefault(chunk.lang, len(self._codes)))
        self.rows += 1
        if len(self._pending) == BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        arrays = [pa.array([getattr(c, name) for c in self._pending], pa.string())
                  for name in COLUMNS]
        self._writer.write_batch(pa.record_batch(arrays, schema=_schema()))
        self._lang_parts.append(np.asarray(self._langs, dtype=LANG_DTYPE))
        self._pending, self._langs = [], []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()
        if len(self._codes) > np.iinfo(LANG_DTYPE).max:
            raise ValueError("more languages than the language column can number")
        # The language column is 2 bytes a chunk: 108 MB for MedCorp's 54M snippets.
        langs = (np.concatenate(self._lang_parts) if self._lang_parts
                 else np.zeros(0, dtype=LANG_DTYPE))
        np.save(self.langs_path, langs)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # a failed build: release the file, the staging folder goes away
            self._writer.close()
            self._sink.close()


def _damaged(path: Path, what: str, hint: str | None) -> InputError:
    return InputError(f"damaged chunk store: {what}", path=path, hint=hint)


class ArrowChunks:
    """Chunks of a format-2 index, read by row from the memory-mapped Arrow file.

    Every read is checked as far as it can be without a checksum (batch sizes, the schema,
    Arrow's own validation, language numbers within the code list), and a file that does not
    decode is an :class:`InputError` naming it, with ``hint`` saying what to do.
    """

    def __init__(self, path: Path, langs_path: Path, languages: Sequence[str], *,
                 counts: dict[str, int] | None = None, hint: str | None = None) -> None:
        import pyarrow as pa

        self.path, self.langs_path, self.hint = path, langs_path, hint
        self.languages = list(languages)
        self._counts = counts
        """Chunks a language, as the manifest records them: checked on the first filter."""
        self._checked_langs = False
        try:
            self._langs = np.load(langs_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            reason = str(err).split(". ")[0]  # numpy's advice on pickles is no help here
            raise _damaged(langs_path, f"numpy cannot read it ({reason})", hint) from None
        if self._langs.ndim != 1 or self._langs.dtype != LANG_DTYPE:
            raise _damaged(langs_path, f"a {self._langs.ndim}-dimensional {self._langs.dtype} "
                           f"array, not one {np.dtype(LANG_DTYPE)} a chunk", hint)
        with self._reading(path):
            self._source = pa.memory_map(str(path), "r")
            self._reader = pa.ipc.open_file(self._source)
        if self._reader.schema.names != list(COLUMNS):
            raise _damaged(path, f"columns {self._reader.schema.names}, not {list(COLUMNS)}",
                           hint)
        rows = len(self._langs)
        if self._reader.num_record_batches != -(-rows // BATCH_ROWS):
            raise _damaged(path, f"{self._reader.num_record_batches} record batches for "
                           f"{rows} rows ({langs_path.name})", hint)

    def __len__(self) -> int:
        return len(self._langs)

    @contextlib.contextmanager
    def _reading(self, path: Path) -> Iterator[None]:
        """Any decoding error (pyarrow's derive from these; zstd's is an OSError) as the one
        line naming the file."""
        import pyarrow as pa

        try:
            yield
        except (OSError, ValueError, pa.ArrowException) as err:
            raise _damaged(path, f"it cannot be decoded ({err})", self.hint) from None

    def _batch(self, number: int) -> Any:
        """Record batch ``number``, validated: row ``r`` is in batch ``r // BATCH_ROWS`` only
        if every batch but the last holds exactly ``BATCH_ROWS`` rows."""
        with self._reading(self.path):
            batch = self._reader.get_batch(number)
            batch.validate(full=True)  # offsets and UTF-8: cheap for one batch
        expected = min(BATCH_ROWS, len(self) - number * BATCH_ROWS)
        if batch.num_rows != expected:
            raise _damaged(self.path, f"batch {number} holds {batch.num_rows} rows, not "
                           f"{expected}", self.hint)
        return batch

    def get(self, rows: Sequence[int]) -> list[Chunk]:
        """The chunks of ``rows``, in that order; each batch is read once."""
        batches: dict[int, Any] = {}
        out = []
        for row in rows:
            row = int(row)
            if not 0 <= row < len(self):
                raise IndexError(f"no chunk {row} in an index of {len(self)}")
            number, offset = divmod(row, BATCH_ROWS)
            if number not in batches:
                batches[number] = self._batch(number)
            batch = batches[number]
            # One value of each column converted, not the whole batch.
            out.append(Chunk(row=row, **{name: batch.column(i)[offset].as_py()
                                         for i, name in enumerate(COLUMNS)}))
        return out

    def __getitem__(self, row: int) -> Chunk:
        return self.get([row])[0]

    def iter_batches(self) -> Iterator[list[Chunk]]:
        """All chunks in row order, one record batch at a time (for a build's later steps)."""
        for number in range(self._reader.num_record_batches):
            batch = self._batch(number).to_pydict()
            first = number * BATCH_ROWS
            yield [Chunk(row=first + i, **{name: batch[name][i] for name in COLUMNS})
                   for i in range(len(batch["id"]))]

    def rows_in(self, lang: str) -> np.ndarray:
        """Rows whose chunk is in ``lang`` (empty when the index has none)."""
        self._check_langs()
        if lang not in self.languages:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._langs == self.languages.index(lang))

    def _check_langs(self) -> None:
        """Once, before the language column filters anything: every number names a listed
        language and each language has the manifest's count. Flipped bytes in the column
        would otherwise hand one language's chunks to another's filter."""
        if self._checked_langs:
            return
        with self._reading(self.langs_path):
            found = np.bincount(self._langs, minlength=len(self.languages))
        if len(found) > len(self.languages):
            raise _damaged(self.langs_path, f"language number {len(found) - 1} is not one of "
                           f"the {len(self.languages)} the manifest lists", self.hint)
        if self._counts is not None:
            counted = dict(zip(self.languages, found.tolist(), strict=True))
            if counted != {code: self._counts.get(code, 0) for code in self.languages}:
                raise _damaged(self.langs_path, f"its chunks a language {counted} differ from "
                               f"the manifest's {self._counts}", self.hint)
        self._checked_langs = True

    def present_languages(self) -> list[str]:
        return sorted(self.languages)


class JsonlChunks:
    """Chunks of a format-1 index (``chunks.jsonl``): one byte offset per line is kept (8 bytes
    a chunk), each hit is one seek and one line."""

    def __init__(self, path: Path, *, hint: str | None = None) -> None:
        self.path, self.hint = path, hint
        offsets, position = [], 0
        with path.open("rb") as handle:
            for line in handle:
                offsets.append(position)
                position += len(line)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._langs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._offsets)

    def _chunk(self, line: bytes, row: int) -> Chunk:
        """The chunk on line ``row + 1``: a line that is not one, or is another row's, is a
        damaged store (a hit would be paired with the wrong passage)."""
        try:
            chunk = Chunk.from_dict(json.loads(line))
        except (ValueError, TypeError) as err:  # JSON, UTF-8 and field errors alike
            raise InputError(f"damaged chunk store: not a chunk ({err})", path=self.path,
                             line=row + 1, hint=self.hint) from None
        if chunk.row != row:
            raise InputError(f"damaged chunk store: row {chunk.row} on the line of row {row}",
                             path=self.path, line=row + 1, hint=self.hint)
        return chunk

    def get(self, rows: Sequence[int]) -> list[Chunk]:
        out = []
        with self.path.open("rb") as handle:
            for row in rows:
                handle.seek(int(self._offsets[int(row)]))
                out.append(self._chunk(handle.readline(), int(row)))
        return out

    def __getitem__(self, row: int) -> Chunk:
        return self.get([row])[0]

    def iter_batches(self) -> Iterator[list[Chunk]]:
        with self.path.open("rb") as handle:
            group: list[Chunk] = []
            for row, line in enumerate(handle):
                group.append(self._chunk(line, row))
                if len(group) == BATCH_ROWS:
                    yield group
                    group = []
            if group:
                yield group

    def _languages(self) -> np.ndarray:
        if self._langs is None:
            self._langs = np.array([c.lang for group in self.iter_batches() for c in group])
        return self._langs

    def rows_in(self, lang: str) -> np.ndarray:
        return np.flatnonzero(self._languages() == lang)

    def present_languages(self) -> list[str]:
        return sorted(set(self._languages().tolist()))


ChunkReader = ArrowChunks | JsonlChunks
