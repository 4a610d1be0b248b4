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
from collections.abc import Callable, Iterator
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
    """A manifest as an older build wrote it (no ``build_key``, ``faiss.nprobe`` or
    ``ef_search``: readers refuse it as damaged); its files are ``TEN_BYTES`` each."""
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


def built_manifest() -> dict:
    """A manifest as a built index holds it now: :func:`manifest` with every field read."""
    data = manifest()
    data["build_key"] = "0" * 64
    data["faiss"] |= {"nprobe": 8, "ef_search": 64}
    return data


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


def changed_keys(mapping: dict, base: dict, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two nested mappings (a group as a whole when
    one side is not a mapping)."""
    changed = set()
    for key in set(mapping) | set(base):
        dotted = f"{prefix}{key}"
        mine, theirs = mapping.get(key, MISSING), base.get(key, MISSING)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            changed |= changed_keys(mine, theirs, f"{dotted}.")
        elif mine != theirs or type(mine) is not type(theirs):
            changed.add(dotted)
    return changed


def names_a_changed_key(err: Any, mapping: dict, base: dict) -> bool:
    """Whether a config error names a key that differs from ``base`` (which loads), a key
    within it, or the group holding it. Keys show as the loader prints them: on one line,
    and an empty key with no name."""
    field = err.field or ""
    shown = [key if key.isprintable() else repr(key)[1:-1]
             for key in changed_keys(mapping, base)]
    return any(field == key or field.startswith(f"{key}.") or key.startswith(f"{field}.")
               for key in shown)


def alias_bomb(levels: int = 9) -> str:
    """A short YAML whose anchors reference each other nine-fold per level."""
    lines = ["name: probe", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def deep_yaml(depth: int = DEPTH) -> str:
    return "name: probe\ndata: " + "[" * depth + "]" * depth + "\n"


# --- oracles: what a reader must make of a file, decided without calm_rag's readers ---------
# Each oracle reads raw bytes with the standard library (``json``, ``bytes.decode``) and the
# record rules written out here, and says either the records a reader must return or the
# line its InputError must name. Two leniencies of the readers are part of the rules:
# Unicode whitespace around a JSON value, and one UTF-8 BOM at the start of the file.

MAX_DEPTH = 64  # how deeply JSON may nest (calm_rag.io.read.MAX_DEPTH, a documented limit)


class Refused(Exception):
    """The input must be refused; ``line`` is the line the error names (None: the whole
    file). ``exact`` False: ``line`` is the last line the error may name (an item's start
    lies at or before the fault the oracle found)."""

    def __init__(self, line: int | None, why: str, exact: bool = True) -> None:
        super().__init__(f"line {line}: {why}")
        self.line, self.why, self.exact = line, why, exact


class _Duplicate(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _Duplicate
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise _Duplicate  # NaN and Infinity are not JSON numbers: refused like a duplicate key


_STRICT = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant)


def json_fault(value: Any) -> str | None:
    """Why a parsed JSON value is refused (nesting too deep, a lone surrogate), or None."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= ch <= "\udfff" for ch in item):
                return "lone surrogate"
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return "too deep"
            children = list(item.items()) if isinstance(item, dict) else item
            for child in children:
                if isinstance(child, tuple):  # a key and its value
                    stack.append((child[0], depth))
                    child = child[1]
                stack.append((child, depth + 1))
    return None


def parse_document(text: str, first_line: int = 1) -> Any:
    """One JSON value (whitespace around it); Refused names the line of the fault or, for a
    fault found after parsing (duplicate key, NaN, depth, surrogate), the last line of it."""
    body = text.strip()
    start = text.index(body[0]) if body else 0

    def line_at(pos: int) -> int:
        return first_line + text.count("\n", 0, start + pos)

    try:
        value, end = _STRICT.raw_decode(body)
    except json.JSONDecodeError as err:
        raise Refused(line_at(err.pos), f"malformed JSON: {err.msg}") from None
    except (_Duplicate, RecursionError):
        raise Refused(line_at(len(body)), "duplicate key, NaN or too deep", exact=False
                      ) from None
    if why := json_fault(value):
        raise Refused(line_at(len(body)), why, exact=False)
    if end < len(body):  # named on the line the value ends or the one the extra data starts
        rest = body[end:]
        raise Refused(line_at(end + len(rest) - len(rest.lstrip())),
                      "extra data after the value", exact=False)
    return value


def decode_line(raw: bytes, line: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(line, "not UTF-8") from None
    if "\x00" in text:
        raise Refused(line, "NUL byte")
    return text


def jsonl_oracle(raw: bytes) -> Iterator[tuple[int, dict]]:
    """``(line, object)`` of a JSONL file as the rules read it; raises Refused."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    seen = False
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final newline ends the last line, it does not start another
    for number, chunk in enumerate(lines, start=1):
        text = decode_line(chunk, number)
        if not text.strip():
            continue
        try:
            value = parse_document(text, number)
        except Refused as refused:  # one line: the fault is on it
            raise Refused(number, refused.why) from None
        if not isinstance(value, dict):
            raise Refused(number, "not a JSON object")
        seen = True
        yield number, value
    if not seen:
        raise Refused(None, "no record")


def text_oracle(raw: bytes) -> str:
    """A whole text file: UTF-8 (one BOM at the start dropped), no NUL; raises Refused."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(1 + raw.count(b"\n", 0, err.start), "not UTF-8") from None
    if "\x00" in text:
        raise Refused(1 + text.count("\n", 0, text.index("\x00")), "NUL byte")
    return text


def json_document_oracle(raw: bytes) -> Any:
    """The value of a whole JSON file; raises Refused."""
    text = text_oracle(raw)
    if not text.strip():
        raise Refused(None, "empty")
    return parse_document(text)


# The record rules. ``_typed`` is the JSON type check every record field goes through: a
# boolean is not a number, an int is a float, and null counts as absent.

def _typed(obj: dict, key: str, kinds: tuple[type, ...], line: int | None, *,
           default: Any = MISSING, nullable: bool = False) -> Any:
    value = obj.get(key)
    if value is None and not (nullable and key in obj):
        if default is MISSING:
            raise Refused(line, f"{key} missing")
        return default
    if value is None:
        return None
    ok = any((isinstance(value, int | float) and not isinstance(value, bool)) if k is float
             else (isinstance(value, int) and not isinstance(value, bool)) if k is int
             else isinstance(value, k) for k in kinds)
    if not ok:
        raise Refused(line, f"{key} has the wrong type")
    return value


def _string_map(obj: dict, key: str, kind: type, line: int) -> dict:
    value = _typed(obj, key, (dict,), line)
    for item in value.values():
        _typed({"v": item}, "v", (kind,), line)
    return value


def _language(value: str, line: int, *, plain_ok: bool = False) -> str:
    import re

    from calm_rag.languages import normalize_code  # the language table is data, not a reader

    try:
        return normalize_code(value)
    except ValueError:
        if plain_ok and re.fullmatch(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*", value):
            return value
        raise Refused(line, f"{value!r} is not a language") from None


def question_record(obj: dict, line: int) -> dict:
    """A sample's ``question`` as the reader must hold it (its ``to_dict``)."""
    options = _string_map(obj, "options", str, line)
    record = {"id": str(_typed(obj, "id", (str, int), line)),
              "lang": _language(_typed(obj, "lang", (str,), line), line),
              "stem": _typed(obj, "stem", (str,), line), "options": options,
              "answer": _typed(obj, "answer", (str,), line, default=None, nullable=True),
              "source": _typed(obj, "source", (str,), line, default="")}
    if not options or (record["answer"] is not None and record["answer"] not in options):
        raise Refused(line, "no options, or a gold answer outside them")
    return record


def sample_record(obj: dict, line: int) -> dict:
    """One sample line as the reader must return it (``Sample.to_dict``)."""
    question = question_record(_typed(obj, "question", (dict,), line), line)
    setting = _typed(obj, "setting", (str,), line, default="zero-shot")
    answer = _typed(obj, "answer", (str,), line, default=None, nullable=True)
    extraction = _typed(obj, "extraction", (str,), line, default="")
    index = _typed(obj, "index", (int,), line, default=0)
    _typed(obj, "id", (str,), line, default=None)
    if setting not in ("zero-shot", "rag") or index < 0:
        raise Refused(line, "unknown setting or negative index")
    if answer is not None and answer not in question["options"] \
            and extraction != "calm_first_char":
        raise Refused(line, "answer outside the options")
    return {"id": f"{question['id']}/{question['lang']}/{setting}/{index}",
            "question": question, "setting": setting, "index": index,
            "instruction": _typed(obj, "instruction", (str,), line, default=""),
            "input": _typed(obj, "input", (str,), line, default=""),
            "text": _typed(obj, "text", (str,), line), "answer": answer,
            "extraction": extraction}


def samples_oracle(raw: bytes) -> list[dict]:
    """The samples a samples JSONL holds: each line read, then checked across lines (an id
    once; a question's languages with the same option labels and gold)."""
    read = [(line, sample_record(obj, line)) for line, obj in jsonl_oracle(raw)]
    seen: set[str] = set()
    first: dict[str, dict] = {}
    for line, sample in read:
        question = sample["question"]
        ref = first.setdefault(question["id"], question)
        gold = {question["answer"], ref["answer"]} - {None}
        if sample["id"] in seen or list(question["options"]) != list(ref["options"]) \
                or len(gold) > 1:
            raise Refused(line, "duplicate sample or languages that do not line up")
        seen.add(sample["id"])
    if not any(sample["text"].strip() for _, sample in read):
        raise Refused(None, "every response is empty")
    return [sample for _, sample in read]


PAIR_TEXT = ("setting", "instruction", "input", "chosen", "rejected", "chosen_answer",
             "chosen_sample_id", "rejected_sample_id")


def pair_record(obj: dict, line: int) -> dict:
    """One ``pairs.jsonl`` line as the reader must return it (``PreferencePair.to_dict``)."""
    known = {*PAIR_TEXT, "question_id", "lang", "rejected_answer", "vote_counts",
             "chosen_source", "target", "extra"}
    if set(obj) - known:
        raise Refused(line, "unknown field")
    return {"question_id": str(_typed(obj, "question_id", (str, int), line)),
            "lang": _language(_typed(obj, "lang", (str,), line), line, plain_ok=True),
            **{key: _typed(obj, key, (str,), line) for key in PAIR_TEXT},
            "rejected_answer": _typed(obj, "rejected_answer", (str,), line, default=None,
                                      nullable=True),
            "vote_counts": _string_map(obj, "vote_counts", int, line),
            "chosen_source": _typed(obj, "chosen_source", (str,), line,
                                    default="same-language"),
            "target": _typed(obj, "target", (str,), line, default="majority"),
            "extra": _typed(obj, "extra", (dict,), line, default={})}


def pairs_oracle(raw: bytes) -> list[dict]:
    """The pairs a ``pairs.jsonl`` holds; the same pair twice is refused at the second."""
    pairs, seen = [], set()
    for line, obj in jsonl_oracle(raw):
        pair = pair_record(obj, line)
        key = (pair["lang"], pair["chosen_sample_id"], pair["rejected_sample_id"])
        if key in seen:
            raise Refused(line, "the same pair twice")
        seen.add(key)
        pairs.append(pair)
    return pairs


def _trl_form(value: Any) -> str | None:
    if isinstance(value, str):
        return "standard"
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value):
        return "conversational"
    return None


def trl_oracle(raw: bytes) -> list[dict]:
    """TRL rows: prompt, chosen and rejected all strings or all message lists."""
    rows = []
    for line, obj in jsonl_oracle(raw):
        forms = {_trl_form(obj.get(key)) if key in obj else None
                 for key in ("prompt", "chosen", "rejected")}
        if None in forms or len(forms) > 1:
            raise Refused(line, "not a TRL row")
        rows.append(obj)
    return rows


def corpus_oracle(raw: bytes, name: str) -> list[dict]:
    """Documents of a JSONL corpus: ids once, ``content`` read where there is no ``text``,
    empty texts left out. The language is the line's (normalized by the language table) or
    else the detector's: those two are data and a model, not the reader under test."""
    from calm_rag.retrieval.language_id import detect_language, language_code

    docs, seen = [], set()
    for line, obj in jsonl_oracle(raw):
        doc_id = str(_typed(obj, "id", (str, int), line))
        column = "content" if "text" not in obj and "content" in obj else "text"
        text = _typed(obj, column, (str,), line)
        title = obj.get("title") or ""  # a falsy title (0, [], false) reads as none
        lang = obj.get("lang")
        if not isinstance(title, str) or doc_id in seen or not isinstance(lang, str | None):
            raise Refused(line, "wrong title or language type, or an id twice")
        seen.add(doc_id)
        if text.strip():
            docs.append({"id": doc_id, "lang": language_code(lang) if lang else
                         detect_language(text), "title": title, "text": text,
                         "source": f"{name}:{line}"})
    if not docs:
        raise Refused(None, "no document with text")
    return docs


def calm_oracle(raw: bytes, lang: str = "en") -> list[dict]:
    """Samples of a CALM sample file (a JSON array of {instruction, input, output, pred}) as
    (question id, lang, text, index, gold); item faults are placed at or before the end."""
    items = json_document_oracle(raw)
    last = 1 + raw.count(b"\n")
    if not isinstance(items, list):
        raise Refused(last, "not an array", exact=False)
    if not items:
        raise Refused(1, "an empty array")
    samples = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Refused(last, "an item is not an object", exact=False)
        try:
            _typed(item, "instruction", (str,), last)
            text = _typed(item, "input", (str,), last)
            gold = _typed(item, "output", (str,), last, default=None, nullable=True) or None
            preds = item["pred"] if "pred" in item else MISSING
            if preds is not None:
                preds = _typed(item, "pred", (list,), last)
                for pred in preds:
                    _typed({"p": pred}, "p", (str,), last)
        except Refused as refused:
            raise Refused(last, refused.why, exact=False) from None
        options = _calm_options(text)
        if not options or (gold is not None and gold not in options):
            raise Refused(last, "no option lines, or the gold is not an option", exact=False)
        samples += [{"question_id": f"x_csqa_test_sampled-{index:05d}", "lang": lang,
                     "text": pred, "index": k, "gold": gold}
                    for k, pred in enumerate(preds or [])]
    if not any(s["text"].strip() for s in samples):
        raise Refused(None, "every response is empty")
    return samples


def _calm_options(text: str) -> dict[str, str]:
    """The ``A. ...`` lines of CALM's input: from the first such line to the next other line."""
    import re

    option = re.compile(r"^\s*([A-Z])\s*[.．)]\s*(.*)$")  # "A. x", "B) y", "C．z"
    options: dict[str, str] = {}
    for line in text.strip().splitlines():
        found = option.match(line)
        if found:
            options[found[1]] = found[2]
        elif options:
            break
    return options


# What a manifest's readers use, by type (a hand-edited manifest missing one is damaged).
MANIFEST_SHAPE: dict[str, Any] = {
    "name": (str,), "build_key": (str,), "built_at": (str,), "build_seconds": (float,),
    "documents": (int,), "languages": (dict,), "files": (dict,), "corpus": (list,),
    "embedder": {"name": (str,), "fingerprint": (str,), "dimension": (int,),
                 "normalize": (bool,)},
    "faiss": {"factory": (str,), "metric": (str,), "ntotal": (int,), "nprobe": (int,),
              "ef_search": (int,)},
    "chunks": {"count": (int,)},
}


def manifest_oracle(raw: bytes) -> dict:
    """A manifest.json: a JSON object of a readable format (1 or 2) with every field of
    ``MANIFEST_SHAPE`` typed, plain file names, and typed corpus entries. A damaged field is
    refused without a line (the file as a whole)."""
    import re

    value = json_document_oracle(raw)
    if not isinstance(value, dict) or value.get("format") not in (1, 2):
        raise Refused(None, "not an object of a readable format")
    for key, kinds in MANIFEST_SHAPE.items():
        group = _typed(value, key, (dict,) if isinstance(kinds, dict) else kinds, None)
        for inner, inner_kinds in (kinds.items() if isinstance(kinds, dict) else ()):
            _typed(group, inner, inner_kinds, None)
    for key in ("description", "spec_path"):
        _typed(value, key, (str,), None, nullable=True)  # present, null allowed
    for name, entry in value["files"].items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}", name) or ".." in name:
            raise Refused(None, "a file name that is not plain")
        entry = _typed(value["files"], name, (dict,), None)
        _typed(entry, "bytes", (int,), None)
        _typed(entry, "sha256", (str,), None)
    for source in value["corpus"]:
        source = _typed({"s": source}, "s", (dict,), None)
        for key, kinds in (("type", (str,)), ("path", (str,)), ("sha256", (str,)),
                           ("documents", (int,))):
            _typed(source, key, kinds, None)
    return value


def vote_record(obj: dict, line: int) -> dict:
    """One ``votes.jsonl`` line as the reader must return it (``Vote.to_dict``)."""
    by_language = _typed(obj, "by_language", (dict,), line)
    for lang in by_language:
        _string_map(by_language, lang, int, line)
    return {"question_id": str(_typed(obj, "question_id", (str, int), line)),
            "setting": _typed(obj, "setting", (str,), line),
            "answer": _typed(obj, "answer", (str,), line, default=None, nullable=True),
            "status": _typed(obj, "status", (str,), line),
            "counts": _string_map(obj, "counts", int, line), "by_language": by_language,
            "n_responses": _typed(obj, "n_responses", (int,), line),
            "n_parsed": _typed(obj, "n_parsed", (int,), line),
            "gold": _typed(obj, "gold", (str,), line, default=None, nullable=True)}


def json_array_oracle(raw: bytes) -> list[Any]:
    """The items of a JSON array file (at least one); faults are placed at or before the last
    line, since an item's error names the line the item starts on."""
    value = json_document_oracle(raw)
    if not isinstance(value, list):
        raise Refused(1 + raw.count(b"\n"), "not an array", exact=False)
    if not value:
        raise Refused(1, "an empty array")
    return value


def check_verdict(read: Callable[[Any], Any], path: Any, oracle: Callable[[], Any]) -> str:
    """Assert that ``read(path)`` returns what ``oracle()`` reads from the same bytes or, where
    the oracle refuses them, raises InputError naming ``path`` and the line (None: the file
    as a whole; at most ``line`` where the oracle knows only the last line it may be).
    Returns the verdict, ``"read"`` or ``"refused"``."""
    from pathlib import Path

    from calm_rag.errors import InputError

    try:
        expected = oracle()
    except Refused as refused:
        try:
            got = read(path)
        except InputError as err:
            assert err.path is not None and Path(err.path) == Path(path), str(err)
            if refused.line is None or refused.exact:
                assert err.line == refused.line, f"{err} (oracle: {refused})"
            else:
                assert err.line is not None and 1 <= err.line <= refused.line, (
                    f"{err} (oracle: {refused})")
            return "refused"
        raise AssertionError(f"read {got!r:.300} where the oracle refuses: {refused}") from None
    got = read(path)
    assert got == expected, f"read {got!r:.300}, the oracle reads {expected!r:.300}"
    return "read"
