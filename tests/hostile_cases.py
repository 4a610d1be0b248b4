"""Valid inputs of every format calm_rag reads, and the ways to break them (issue 16).

Shared by ``bench/hostile_probe.py`` (which runs the ``calm-rag`` CLI on each broken input) and
``tests/test_properties.py`` (hypothesis drives the same readers in-process). The formats here
are written out by hand, not produced by calm_rag, so a reader bug cannot hide in the fixture.
"""

from __future__ import annotations

import codecs
import copy
import json
import random
from collections.abc import Callable
from typing import Any

OPTIONS = {"A": "town", "B": "school", "C": "hospital", "D": "office"}
LANGS = ("en", "zh", "fr")


# --- valid records -------------------------------------------------------------------------

def sample_row(qid: str = "q1", lang: str = "en", index: int = 0, letter: str = "C") -> dict:
    """One line of a samples JSONL, as ``calm-rag vote`` reads it."""
    return {
        "id": f"{qid}/{lang}/zero-shot/{index}",
        "question": {"id": qid, "lang": lang, "stem": f"Where do doctors work? ({lang})",
                     "options": dict(OPTIONS), "answer": "C", "source": "probe"},
        "setting": "zero-shot", "index": index, "instruction": "Answer with one letter.",
        "input": f"question {qid} in {lang}", "text": f"Let me think. Answer: {letter}",
        "answer": None, "extraction": "",
    }


def sample_rows() -> list[dict]:
    """Two questions in three languages, two samples each: enough for votes and pairs."""
    letters = {"en": "CA", "zh": "CB", "fr": "CC"}
    return [sample_row(qid, lang, i, letters[lang][i])
            for qid in ("q1", "q2") for lang in LANGS for i in range(2)]


def pair_row(lang: str = "en") -> dict:
    """One line of ``pairs.jsonl`` as ``calm-rag vote`` writes it."""
    return {
        "question_id": "q1", "lang": lang, "setting": "zero-shot",
        "instruction": "Answer with one letter.", "input": "Where do doctors work?",
        "chosen": "Answer: C", "rejected": "Answer: A", "chosen_answer": "C",
        "rejected_answer": "A", "vote_counts": {"C": 3, "A": 1},
        "chosen_sample_id": f"q1/{lang}/zero-shot/0",
        "rejected_sample_id": f"q1/{lang}/zero-shot/1", "chosen_source": "same-language",
        "target": "majority", "extra": {},
    }


def pair_rows() -> list[dict]:
    return [pair_row(lang) for lang in LANGS]


def calm_item(number: int = 0) -> dict:
    """One item of a CALM sample file (Alpaca-style with sampled ``pred``)."""
    return {
        "instruction": "Answer the question.",
        "input": f"Question: where do doctors work ({number})?\nA. town\nB. school\nC. hospital"
                 "\nD. office",
        "output": "C",
        "pred": ["Answer: C", "Answer: A"],
    }


def calm_items() -> list[dict]:
    return [calm_item(i) for i in range(2)]


def corpus_rows() -> list[dict]:
    return [{"id": f"d{i}", "text": f"Doctors work in hospitals. Passage {i}.", "title": "care",
             "lang": "en"} for i in range(3)]


TEN_BYTES = b"0123456789"
TEN_BYTES_SHA = "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"


def manifest() -> dict:
    """A manifest as a built index holds it; its files are ``TEN_BYTES`` each."""
    return {
        "format": 1, "name": "broken", "description": "hand-made", "spec_path": "",
        "embedder": {"name": "all-MiniLM-L6-v2", "dimension": 384, "normalize": True,
                     "fingerprint": "0" * 40},
        "faiss": {"factory": "Flat", "metric": "ip", "ntotal": 3},
        "chunks": {"count": 3}, "documents": 3, "languages": {"en": 3},
        "built_at": "2026-01-01T00:00:00Z", "build_seconds": 1.0, "corpus": [],
        "files": {"index.faiss": {"bytes": 10, "sha256": TEN_BYTES_SHA},
                  "chunks.jsonl": {"bytes": 10, "sha256": TEN_BYTES_SHA}},
    }


EXPERIMENT = {
    "name": "probe",
    "data": {"source": "bundled", "dataset": "medical", "languages": ["en", "zh"],
             "train": 2, "heldout": 1},
    "generator": {"backend": "hf", "model": "smollm2-135m-instruct"},
    "retrieval": {"enabled": False},
    "runs_dir": "runs",
}


def experiment() -> dict:
    return copy.deepcopy(EXPERIMENT)


def spec(corpus_path: str = "corpus.jsonl") -> dict:
    """An index spec on a local JSONL corpus, with the small English embedder (no conversion)."""
    return {"name": "probe-index", "corpus": [{"type": "jsonl", "path": corpus_path}],
            "chunking": {"chunk_size": 128, "chunk_overlap": 16},
            "embedder": {"model": "all-MiniLM-L6-v2", "batch_size": 8},
            "faiss": {"factory": "Flat", "metric": "ip"}}


# --- serializing ---------------------------------------------------------------------------

def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def to_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# --- breaking bytes ------------------------------------------------------------------------

def _latin1(text: str) -> bytes:
    # A non-ASCII letter makes Latin-1 differ from UTF-8 (pure ASCII would decode either way).
    return text.replace("o", "\u00e9", 1).encode("latin-1", errors="replace")


def _nul(text: str) -> bytes:
    middle = len(text) // 2
    return (text[:middle] + "\x00" + text[middle:]).encode()


ENCODINGS: dict[str, Callable[[str], bytes]] = {
    "utf16le-bom": lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
    "utf16be-bom": lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
    "utf8-bom": lambda t: codecs.BOM_UTF8 + t.encode(),
    "latin1": _latin1,
    "binary": lambda t: random.Random(16).randbytes(512),
    "nul-byte": _nul,
    "surrogate-bytes": lambda t: t.encode() + b"\xed\xa0\x80\n",
}


def with_surrogate(row: dict, key: str) -> str:
    """A record whose ``key`` holds an unpaired surrogate escape (valid JSON, unwritable text)."""
    value = ["PLACEHOLDER"] if isinstance(row.get(key), list) else "PLACEHOLDER"
    return json.dumps({**row, key: value}).replace("PLACEHOLDER", "ok \\ud800")


# --- breaking JSON structure ---------------------------------------------------------------

DEPTH = 10_000


def json_structures(valid: str, row: dict, dup: tuple[str, Any], text_key: str,
                    wrap: Callable[[str], str] = lambda obj: obj + "\n") -> dict[str, str]:
    """Ways a JSON(L) file can be malformed or mis-shaped. ``valid`` is the whole valid file,
    ``row`` one record of it, ``wrap`` puts one record's text back into the file's form and
    ``dup`` is a key (with another value) that a duplicate key repeats; ``text_key`` a field
    whose text is written to outputs (it gets an unpaired surrogate)."""
    obj = json.dumps(row, ensure_ascii=False)

    def extended(extra: str) -> str:
        return wrap(obj[:-1] + extra + "}")

    key, value = dup
    return {
        # cut inside a record: a JSONL cut at a line end is a valid, shorter file
        "truncated": valid[: len(valid) // 2 + 7],
        "empty-file": "",
        "whitespace-only": "  \n\n\t\n",
        "deep-nesting": "[" * DEPTH + "]" * DEPTH + "\n",
        "deep-nesting-in-field": extended(', "deep": ' + "[" * DEPTH + "]" * DEPTH),
        "deep-objects-in-field": extended(', "deep": ' + '{"a":' * DEPTH + "1" + "}" * DEPTH),
        "top-level-array": "[1, 2, 3]\n",
        "top-level-number": "42\n",
        "top-level-string": '"hello"\n',
        "top-level-null": "null\n",
        "nan-literal": extended(', "score": NaN'),
        "infinity-literal": extended(', "score": -Infinity'),
        "duplicate-key": extended(f', "{key}": {json.dumps(value)}'),
        "lone-surrogate-escape": wrap(with_surrogate(row, text_key)),
        "huge-string": extended(', "blob": "' + "x" * 20_000_000 + '"'),
    }


# --- breaking fields -----------------------------------------------------------------------

WRONG_VALUES: dict[str, Any] = {
    "int": 7, "float-nan": float("nan"), "bool": True, "list": ["x"], "dict": {"x": 1},
    "null": None, "empty-str": "",
}


def field_paths(row: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every field of a record, nested objects included (``question.id``)."""
    paths = []
    for key, value in row.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if isinstance(value, dict) and key != "options" and value:
            paths += field_paths(value, f"{path}.")
    return paths


def set_path(row: dict, path: str, value: Any) -> dict:
    """A copy of ``row`` with the dotted ``path`` set to ``value`` (``MISSING`` deletes it)."""
    row = copy.deepcopy(row)
    *parents, last = path.split(".")
    node = row
    for part in parents:
        node = node[part]
    if value is MISSING:
        node.pop(last, None)
    else:
        node[last] = value
    return row


MISSING = object()


def field_variants(row: dict) -> dict[str, dict]:
    """``{"question.id=int": row', "text=missing": row', ...}`` for every field of ``row``."""
    out: dict[str, dict] = {}
    for path in field_paths(row):
        for kind, value in WRONG_VALUES.items():
            out[f"{path}={kind}"] = set_path(row, path, value)
        out[f"{path}=missing"] = set_path(row, path, MISSING)
    out["extra-field"] = {**row, "surprise": "unexpected"}
    return out


# --- breaking experiment YAML --------------------------------------------------------------

NUMERIC_VALUES: dict[str, tuple[str, bool | None]] = {
    # YAML text of the value, and whether it must be refused (None: either answer is fine).
    "-1": ("-1", True),
    "0": ("0", None),
    "inf": (".inf", True),
    "nan": (".nan", True),
    "string": ("'abc'", True),
    "list": ("[1, 2]", True),
    "5e-6": ("5e-6", None),
}


def set_yaml_key(mapping: dict, dotted: str, value: Any) -> dict:
    """A copy of ``mapping`` with ``a.b.c`` set, groups created where absent."""
    mapping = copy.deepcopy(mapping)
    *parents, last = dotted.split(".")
    node = mapping
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return mapping


def alias_bomb(levels: int = 9) -> str:
    """A short YAML whose anchors reference each other nine-fold per level."""
    lines = ["name: probe", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def deep_yaml(depth: int = DEPTH) -> str:
    return "name: probe\ndata: " + "[" * depth + "]" * depth + "\n"
