"""CALM's released files: Alpaca-style sample files in, LLaMA-Factory DPO files out.

A CALM sample file (``x_csqa_<lang>_train_sampled.json``) is a JSON array of
``{instruction, input, output, pred}``: ``input`` holds the stem and ``A. ...`` option lines,
``output`` the gold letter and ``pred`` the sampled responses. Files of one folder are parallel
by position: item *i* is the same question in every language.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from calm_rag.datasets.sample_checks import check_aligned, check_has_text
from calm_rag.errors import InputError
from calm_rag.io import (
    OutputFolder,
    expect,
    expect_list,
    json_type,
    output_folder,
    read_json_array,
    write_json,
)
from calm_rag.languages import LANGUAGES, normalize_code
from calm_rag.records import PreferencePair, Question, Sample

_OPTION_LINE = re.compile(r"^\s*([A-Z])\s*[.．)]\s*(.*?)\s*$")
# What LLaMA-Factory needs to read a DPO file (see its data/dataset_info.json docs).
_RANKING_COLUMNS = {"prompt": "instruction", "query": "input", "chosen": "chosen",
                    "rejected": "rejected"}
# CALM names Chinese "cn"; LLaMA-Factory users of CALM's files expect those names.
_CALM_CODES = {"zh": "cn"}


def split_language(path: Path) -> tuple[str, str]:
    """``x_csqa_cn_train_sampled.json`` → ``("zh", "x_csqa_train_sampled")``."""
    tokens = path.stem.split("_")
    for i, token in enumerate(tokens):
        try:
            code = normalize_code(token)
        except InputError:
            continue
        return code, "_".join(tokens[:i] + tokens[i + 1 :])
    raise InputError("no language code in the file name", path=path,
                     hint="name it like x_csqa_en_train_sampled.json")


def parse_calm_input(text: str) -> tuple[str, dict[str, str]]:
    """Split CALM's ``input`` into the stem and the ``A. ...`` options."""
    lines = text.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if _OPTION_LINE.match(line)), None)
    if first is None:
        raise InputError("no option lines like 'A. ...'", field="input")
    options = {}
    for line in lines[first:]:
        match = _OPTION_LINE.match(line)
        if not match:
            break  # a trailing "Answer:" cue ends the options
        options[match.group(1)] = match.group(2)
    return _strip_question_marker("\n".join(lines[:first]).strip()), options


_QUESTION_MARKER = re.compile(
    "^(?:" + "|".join(sorted({re.escape(lang.question_marker.rstrip(":： "))
                               for lang in LANGUAGES.values()})) + r")\s*[:：]\s*")


def _strip_question_marker(stem: str) -> str:
    # CALM's German DPO inputs say "Frage:Frage: ...": strip every leading marker.
    while match := _QUESTION_MARKER.match(stem):
        stem = stem[match.end():]
    return stem


def read_calm_file(path: str | Path) -> list[Sample]:
    """Samples of one CALM sample file (answers not extracted yet)."""
    return [sample for _, _, sample in read_calm_entries(path)]


def read_calm_entries(path: str | Path) -> list[tuple[Path, int, Sample]]:
    """``(file, line, sample)`` for a CALM sample file, or every ``*.json`` of a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json")
                       if p.name != "dataset_info.json" and not p.name.startswith("."))
        if not files:
            raise InputError("no CALM sample files (*.json) in this folder", path=path)
        read = {file: _read_one(file) for file in files}
        _check_same_length({file: n for file, (_, n) in read.items()})
        # Item by item across the files (the sort is stable, so files keep their order within
        # an item): questions then come in item order, as CALM's pairs do, even where the
        # first file has no response to an item.
        entries = [entry for entries, _ in read.values() for entry in entries]
        return sorted(entries, key=_item_position)
    return _read_one(path)[0]


def _item_position(entry: tuple[Path, int, Sample]) -> tuple[str, int]:
    question = entry[2].question
    return question.source, int(question.id.rpartition("-")[2])  # ids are "<dataset>-<item>"


def _check_same_length(items: dict[Path, int]) -> None:
    # CALM files are parallel by position, so files of different lengths cannot be voted on.
    # Items are counted, not responses: an item may have none (CALM reads "pred": [] or null).
    if len(set(items.values())) > 1:
        longest = max(items, key=lambda file: items[file])
        shortest = min(items, key=lambda file: items[file])
        raise InputError(
            f"has {items[shortest]} items but {longest.name} has {items[longest]}: "
            "CALM sample files are parallel by position and must have the same length",
            path=shortest, line=1)


def _read_one(path: Path) -> tuple[list[tuple[Path, int, Sample]], int]:
    """The samples of one CALM file and its number of items."""
    lang, dataset = split_language(path)
    samples: list[tuple[Path, int, Sample]] = []
    items = read_json_array(path)
    for index, (line, item) in enumerate(items):
        where: dict[str, Any] = {"path": path, "line": line}
        if not isinstance(item, dict):
            raise InputError(f"expected an object {{instruction, input, output, pred}}, got "
                             f"{json_type(item)}", **where)
        instruction = expect(item, "instruction", str, path, line)
        expect(item, "input", str, path, line)
        expect(item, "output", (str, type(None)), path, line, default=None)
        if "pred" not in item:
            raise InputError("missing", field="pred", **where)
        # CALM's get_ans (utils/votingfunc.py L23) reads a null pred as an item without answers.
        preds = [] if item["pred"] is None else expect_list(item, "pred", str, path, line)
        try:
            stem, options = parse_calm_input(item["input"])
            question = Question(id=f"{dataset}-{index:05d}", lang=lang, stem=stem,
                                options=options, answer=item.get("output") or None,
                                source=f"calm:{dataset}")
        except InputError as err:
            field = "output" if err.field == "answer" else err.field
            raise InputError(err.message, field=field, **where) from None
        samples.extend(
            (path, line, Sample(question=question, text=text, index=k,
                                instruction=instruction, input=item["input"]))
            for k, text in enumerate(preds)
        )
    return samples, len(items)


def read_calm_samples(path: str | Path) -> list[Sample]:
    """Samples of a CALM sample file or folder, checked to line up across languages."""

    entries = read_calm_entries(path)
    check_aligned(entries)
    check_has_text(entries, Path(path))
    return [sample for _, _, sample in entries]


def calm_code(lang: str) -> str:
    """The language code CALM's own file names use (``zh`` → ``cn``)."""
    return _CALM_CODES.get(lang, lang)


def export_llamafactory(
    pairs: list[PreferencePair], out_dir: str | Path | OutputFolder, calm_names: bool = False
) -> dict[str, int]:
    """Write ``DPO_<lang>.json`` files into ``out_dir`` and merge their entries into its
    ``dataset_info.json``, as LLaMA-Factory reads them.

    Returns rows per language. The user's other files and ``dataset_info.json`` entries stay;
    ``out_dir`` may be an :class:`OutputFolder` already being staged (the CLI's).
    """
    by_lang: dict[str, list[dict]] = {}
    for pair in pairs:
        code = calm_code(pair.lang) if calm_names else pair.lang
        by_lang.setdefault(code, []).append(
            {"instruction": pair.instruction, "input": pair.input,
             "chosen": pair.chosen, "rejected": pair.rejected}
        )
    info = {
        f"DPO_{code}": {"file_name": f"DPO_{code}.json", "ranking": True,
                        "columns": dict(_RANKING_COLUMNS)}
        for code in by_lang
    }
    if isinstance(out_dir, OutputFolder):
        _stage_llamafactory(out_dir, by_lang, info)
    else:
        with output_folder(out_dir, field="out_dir") as folder:
            _stage_llamafactory(folder, by_lang, info)
    return {code: len(rows) for code, rows in by_lang.items()}


def _stage_llamafactory(folder: OutputFolder, by_lang: dict[str, list[dict]],
                        info: dict[str, dict]) -> None:
    for code, rows in by_lang.items():
        write_json(folder.path(f"DPO_{code}.json"), rows)
    folder.merge_json("dataset_info.json", info)
