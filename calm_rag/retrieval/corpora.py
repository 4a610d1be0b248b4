"""Corpus readers: MedQA textbooks, generic JSONL, parquet (MedRAG's layout), folders of
``.txt`` files, and hub datasets streamed (:mod:`calm_rag.retrieval.hub_corpus`).

Each reader yields :class:`Document` records in a fixed order (files sorted by name), so the same
corpus always gives the same chunks, the same hashes and the same embedding shards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calm_rag.errors import InputError
from calm_rag.io import read_jsonl, read_text
from calm_rag.registries import CORPUS_READERS
from calm_rag.retrieval.hub_corpus import HubCorpus
from calm_rag.retrieval.language_id import detect_language, language_code
from calm_rag.runtime.provenance import files_digest

log = logging.getLogger(__name__)

# MedQA's release: textbooks/en/*.txt (English) and textbooks/zh_paragraph/*.txt (Chinese, one
# paragraph a line); zh_sentence/ holds the same Chinese text cut finer, so it is not read.
MEDQA_TEXTBOOK_FOLDERS = {"en": "en", "zh_paragraph": "zh"}


@dataclass(frozen=True)
class Document:
    """One corpus entry before chunking: a JSONL passage or a whole text file."""

    id: str
    lang: str
    title: str
    text: str
    source: str
    """Where it came from: ``file`` or ``file:line``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@CORPUS_READERS.register("jsonl")
def read_jsonl_corpus(path: Path, lang: str | None = None) -> Iterator[Document]:
    """``{"id", "text", "title"?, "lang"?}`` a line (MedRAG's ``content`` read as ``text``);
    ids must be unique (qrels name them)."""
    corpus_files("jsonl", path)  # a folder given for a file is named as such
    yield from _documents(read_jsonl(path), path, path.name, lang)


@CORPUS_READERS.register("parquet")
def read_parquet_corpus(path: Path, lang: str | None = None) -> Iterator[Document]:
    """A parquet file, or every ``*.parquet`` under a folder (a local copy of a hub corpus
    such as ``MedRAG/textbooks``): columns ``id``, ``text`` or ``content``, ``title``?,
    ``lang``?; read in batches, never whole."""
    import pyarrow.parquet as pq

    for file in corpus_files("parquet", path):
        try:
            table = pq.ParquetFile(file)
        except (OSError, ValueError) as err:
            raise InputError(f"not a readable parquet file: {err}", path=file) from None
        names = set(table.schema_arrow.names)
        columns = [c for c in ("id", "text", "content", "title", "lang") if c in names]

        def rows(table: Any = table, columns: list[str] = columns) -> Iterator[tuple[int, Any]]:
            row = 0
            for batch in table.iter_batches(batch_size=1024, columns=columns):
                for obj in batch.to_pylist():
                    row += 1
                    yield row, obj

        yield from _documents(rows(), file, file.name, lang)


@CORPUS_READERS.register("hub")
def read_hub_corpus(source: HubCorpus, lang: str | None = None) -> Iterator[Document]:
    """A hub dataset streamed (``name``, ``config``, ``split``, ``revision``), or a local copy
    in its layout (``path``); columns named by ``id_field``, ``text_field``, ``title_field``."""
    label = f"{source.name or Path(str(source)).name}/{source.split}"
    yield from _documents(source.rows(), str(source), label, lang,
                          id_field=source.id_field, text_field=source.text_field,
                          title_field=source.title_field)


def _documents(rows: Iterator[tuple[int, Any]], path: Path | str, label: str,
               lang: str | None, *, id_field: str = "id", text_field: str | None = None,
               title_field: str | None = None) -> Iterator[Document]:
    seen: dict[str, int] = {}
    for line, obj in rows:
        doc_id = str(_field(obj, id_field, (str, int), path, line))
        # MedRAG's corpora name the passage ``content`` (``contents`` is title + content).
        column = text_field or ("content" if "text" not in obj and "content" in obj else "text")
        text = _field(obj, column, str, path, line)
        title = obj.get(title_field or "title") or ""
        if not isinstance(title, str):
            raise InputError("expected a string", path=path, line=line,
                             field=title_field or "title")
        if doc_id in seen:
            raise InputError(f"duplicate id {doc_id!r} (first on line {seen[doc_id]})",
                             path=path, line=line, field=id_field)
        seen[doc_id] = line
        given = lang or obj.get("lang")
        if given is not None and not isinstance(given, str):
            raise InputError("expected a language code", path=path, line=line, field="lang")
        yield Document(id=doc_id, lang=_language(given, text), title=title, text=text,
                       source=f"{label}:{line}")


@CORPUS_READERS.register("text")
def read_text_folder(path: Path, lang: str | None = None) -> Iterator[Document]:
    """Every ``.txt`` file under ``path`` (recursively) is one document, its id the relative
    path without the suffix and its title the file name."""
    for file in corpus_files("text", path):
        doc_id = file.relative_to(path).with_suffix("").as_posix()
        yield _text_file_document(file, doc_id, lang)


@CORPUS_READERS.register("medqa-textbooks")
def read_medqa_textbooks(path: Path, lang: str | None = None) -> Iterator[Document]:
    """MedQA's ``textbooks`` folder: ``en/*.txt`` and ``zh_paragraph/*.txt``, one book a file."""
    for file in corpus_files("medqa-textbooks", path):
        code = MEDQA_TEXTBOOK_FOLDERS[file.parent.name]
        yield _text_file_document(file, f"{code}/{file.stem}", lang or code)


def corpus_files(kind: str, path: Path) -> list[Path]:
    """The files a corpus source reads, in reading order (what its hash covers)."""
    if kind == "jsonl":
        if not path.is_file():
            raise InputError("expected a JSONL file, found a folder", path=path)
        return [path]
    if kind == "parquet":
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        if not files:
            raise InputError("no .parquet files in this folder", path=path)
        return files
    if not path.is_dir():
        raise InputError("expected a folder, found a file", path=path)
    if kind == "medqa-textbooks":
        folders = [path / sub for sub in MEDQA_TEXTBOOK_FOLDERS if (path / sub).is_dir()]
        if not folders:
            raise InputError("no en/ or zh_paragraph/ folder inside", path=path,
                             hint="point to MedQA's data_clean/textbooks folder")
        files = [file for folder in folders for file in sorted(folder.glob("*.txt"))]
    else:
        files = sorted(path.rglob("*.txt"))
    if not files:
        raise InputError("no .txt files in this folder", path=path)
    return files


def hash_corpus(kind: str, path: Path | HubCorpus) -> str:
    """SHA-256 over the names and bytes of the files a source reads (a hub source: its commit
    and column mapping, or its local copy's files)."""
    if isinstance(path, HubCorpus):
        return path.digest()
    return files_digest((file.name if file == path else file.relative_to(path).as_posix(), file)
                        for file in corpus_files(kind, path))


def read_corpus(kind: str, path: Path | HubCorpus, lang: str | None = None
                ) -> Iterator[Document]:
    """Documents of one corpus source; errors name the path (and line) and what to do."""
    reader = CORPUS_READERS.get(kind, field="corpus.type")
    if not path.exists():
        raise InputError("no such file or folder", path=str(path), hint="check the corpus path")
    count = 0
    for document in reader(path, language_code(lang) if lang else None):
        if document.text.strip():
            count += 1
            yield document
        else:
            log.warning("%s: skipping document %r: no text", path, document.id)
    if count == 0:
        raise InputError("the corpus has no document with text", path=str(path))


def _text_file_document(file: Path, doc_id: str, lang: str | None) -> Document:
    text = read_text(file)
    title = file.stem.replace("_", " ")
    return Document(id=doc_id, lang=_language(lang, text), title=title, text=text,
                    source=str(file))


def _language(given: str | None, text: str) -> str:
    return language_code(given) if given else detect_language(text)


def _field(obj: dict, key: str, kind: type | tuple[type, ...], path: Path | str, line: int
           ) -> Any:
    if obj.get(key) is None:
        raise InputError("missing", path=path, line=line, field=key)
    if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
        raise InputError(f"expected {'a string' if kind is str else 'a string or number'}, "
                         f"got {type(obj[key]).__name__}", path=path, line=line, field=key)
    return obj[key]
