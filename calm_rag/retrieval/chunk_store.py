"""The chunks of an index on disk, read by row: an Arrow IPC file and a language column.

``chunks.arrow`` holds one record batch per ``BATCH_ROWS`` consecutive chunks (zstd-compressed),
so the chunk of row ``r`` is in batch ``r // BATCH_ROWS``: a query's hits read a few batches
of a memory-mapped file, and opening reads only the file's footer. ``chunk_langs.npy`` holds
each chunk's language as a small integer (the codes are listed in the manifest), memory-mapped
for the language filter. Indexes built before this layout (``chunks.jsonl``, manifest format 1)
are read through :class:`JsonlChunks`, which keeps one offset per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


class ArrowChunks:
    """Chunks of a format-2 index, read by row from the memory-mapped Arrow file."""

    def __init__(self, path: Path, langs_path: Path, languages: Sequence[str]) -> None:
        import pyarrow as pa

        self._source = pa.memory_map(str(path), "r")
        self._reader = pa.ipc.open_file(self._source)
        self._langs = np.load(langs_path, mmap_mode="r")
        self.languages = list(languages)
        rows = len(self._langs)
        if self._reader.num_record_batches != -(-rows // BATCH_ROWS):
            raise ValueError(f"{self._reader.num_record_batches} record batches for {rows} rows")

    def __len__(self) -> int:
        return len(self._langs)

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
                batches[number] = self._reader.get_batch(number)
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
            batch = self._reader.get_batch(number).to_pydict()
            first = number * BATCH_ROWS
            yield [Chunk(row=first + i, **{name: batch[name][i] for name in COLUMNS})
                   for i in range(len(batch["id"]))]

    def rows_in(self, lang: str) -> np.ndarray:
        """Rows whose chunk is in ``lang`` (empty when the index has none)."""
        if lang not in self.languages:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._langs == self.languages.index(lang))

    def present_languages(self) -> list[str]:
        return sorted(self.languages)


class JsonlChunks:
    """Chunks of a format-1 index (``chunks.jsonl``): one byte offset per line is kept (8 bytes
    a chunk), each hit is one seek and one line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        offsets, position = [], 0
        with path.open("rb") as handle:
            for line in handle:
                offsets.append(position)
                position += len(line)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._langs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._offsets)

    def get(self, rows: Sequence[int]) -> list[Chunk]:
        out = []
        with self.path.open("rb") as handle:
            for row in rows:
                handle.seek(int(self._offsets[int(row)]))
                out.append(Chunk.from_dict(json.loads(handle.readline())))
        return out

    def __getitem__(self, row: int) -> Chunk:
        return self.get([row])[0]

    def iter_batches(self) -> Iterator[list[Chunk]]:
        with self.path.open(encoding="utf-8") as handle:
            group: list[Chunk] = []
            for line in handle:
                group.append(Chunk.from_dict(json.loads(line)))
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
