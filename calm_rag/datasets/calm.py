"""CALM's released files: Alpaca-style sample files in, LLaMA-Factory DPO files out.

A CALM sample file (``x_csqa_<lang>_train_sampled.json``) is a JSON array of
``{instruction, input, output, pred}``: ``input`` holds the stem and ``A. ...`` option lines,
``output`` the gold letter and ``pred`` the sampled responses. Files of one folder are parallel
by position: item *i* is the same question in every language.

One folder may hold several models' or runs' files (the authors keep
``x_csqa_<lang>_train_sampled.json`` beside ``x_csqa_<lang>_train_mistral_sampled.json``).
Files group by their name with the language code removed; a folder of several groups is read
only when one is chosen (``group=``), since pooling two models' samples would vote them together.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from calm_rag.datasets.sample_checks import check_aligned, check_has_text, check_parallel
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
    i = _language_position(path)
    return normalize_code(tokens[i]), "_".join(tokens[:i] + tokens[i + 1 :])


def _language_position(path: Path) -> int:
    """Index of the language code among the ``_``-separated tokens of the file's stem."""
    for i, token in enumerate(path.stem.split("_")):
        try:
            normalize_code(token)
        except InputError:
            continue
        return i
    raise InputError("no language code in the file name", path=path,
                     hint="name it like x_csqa_en_train_sampled.json")


def sample_groups(files: list[Path]) -> dict[str, list[Path]]:
    """CALM files by group: the file name without its language code
    (``x_csqa_train_sampled``, ``x_csqa_train_mistral_sampled``), in name order."""
    groups: dict[str, list[Path]] = {}
    for file in sorted(files):
        groups.setdefault(split_language(file)[1], []).append(file)
    return groups


def choose_group(files: list[Path], group: str | None, where: Path) -> list[Path]:
    """The files of one group: ``group`` is a group name or a file-name pattern
    (``x_csqa_*_train_sampled.json``); without it, the files must form one group."""
    chosen = files
    if group is not None and _is_pattern(group):
        chosen = [file for file in files if fnmatchcase(file.name, group)]
    groups = sample_groups(chosen)
    if group is not None and not _is_pattern(group):
        groups = {group: groups[group]} if group in groups else {}
    if not groups:
        raise InputError(f"no CALM sample file of group or pattern {group!r} (groups here: "
                         f"{', '.join(_group_names(files)) or 'none'})", path=where,
                         field="group", hint="name a group, or a file pattern like "
                                             "'x_csqa_*_train_sampled.json'")
    if len(groups) > 1:
        raise InputError(
            f"holds the sample files of {len(groups)} groups (models or runs): "
            f"{'; '.join(f'{name} ({_show_files(fs)})' for name, fs in groups.items())}; "
            "reading them together would pool their samples in one vote",
            path=where, field="group" if group is not None else None,
            hint=_choice_hint(groups))
    return next(iter(groups.values()))


def _group_names(files: list[Path]) -> list[str]:
    """The groups of the files whose name has a language code (for an error message)."""
    names = []
    for file in files:
        try:
            names.append(split_language(file)[1])
        except InputError:
            continue
    return sorted(set(names))


def _is_pattern(group: str) -> bool:
    return group.endswith(".json") or any(char in group for char in "*?[")


def _show_files(files: list[Path]) -> str:
    """``x_csqa_{cn,de,en}_train_sampled.json`` where the names differ only in the code."""
    around = {_around_language(file) for file in files}
    if len(files) > 1 and len(around) == 1:
        before, after = around.pop()
        codes = ",".join(_raw_code(file) for file in files)
        return f"{before}{{{codes}}}{after}"
    return ", ".join(file.name for file in files)


def _around_language(file: Path) -> tuple[str, str]:
    """The file name before and after its language code."""
    tokens, i = file.name.split("_"), _language_position(file)
    before = "_".join(tokens[:i]) + "_" if i else ""
    if i == len(tokens) - 1:  # the code ends the stem: the suffix follows it
        return before, file.suffix
    return before, "_" + "_".join(tokens[i + 1 :])


def _raw_code(file: Path) -> str:
    return file.stem.split("_")[_language_position(file)]


def _choice_hint(groups: dict[str, list[Path]]) -> str:
    name, files = next(iter(groups.items()))
    before, after = _around_language(files[0])
    pattern = f"{before}*{after}"
    return (f"choose one with --group (group= in Python): the group {name}, or a file "
            f"pattern like '{pattern}'")


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
    return strip_question_marker("\n".join(lines[:first]).strip()), options


_QUESTION_MARKER = re.compile(
    "^(?:" + "|".join(sorted({re.escape(lang.question_marker.rstrip(":： "))
                               for lang in LANGUAGES.values()})) + r")\s*[:：]\s*")


def strip_question_marker(stem: str) -> str:
    """``stem`` without its leading "Question:" markers, in any language (CALM's German DPO
    inputs say "Frage:Frage: ...": every one is stripped)."""
    while match := _QUESTION_MARKER.match(stem):
        stem = stem[match.end():]
    return stem


def read_calm_file(path: str | Path, *, group: str | None = None) -> list[Sample]:
    """Samples of one CALM sample file (answers not extracted yet)."""
    return [sample for _, _, sample in read_calm_entries(path, group=group)]


def read_calm_entries(path: str | Path, *, group: str | None = None
                      ) -> list[tuple[Path, int, Sample]]:
    """``(file, line, sample)`` for a CALM sample file, or the ``*.json`` files of a folder:
    all of them when they form one group, else those of ``group`` (a group name or a
    file-name pattern; see :func:`choose_group`)."""
    path = Path(path)
    if path.is_dir():
        files = _calm_files(path)
        if not files:
            raise InputError("no CALM sample files (*.json) in this folder", path=path)
        read = {file: _read_one(file) for file in choose_group(files, group, path)}
        _check_same_length({file: n for file, (_, n) in read.items()})
        # Item by item across the files (the sort is stable, so files keep their order within
        # an item): questions then come in item order, as CALM's pairs do, even where the
        # first file has no response to an item.
        entries = [entry for entries, _ in read.values() for entry in entries]
        return sorted(entries, key=_item_position)
    if group is not None:  # a file is its own group: refuse a choice it does not match
        choose_group([path], group, path)
    return _read_one(path)[0]


def _calm_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json")
                  if p.name != "dataset_info.json" and not p.name.startswith("."))


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


def read_calm_samples(path: str | Path, *, group: str | None = None) -> list[Sample]:
    """Samples of a CALM sample file or folder (of one group: see :func:`read_calm_entries`),
    checked to line up across languages."""

    entries = read_calm_entries(path, group=group)
    check_aligned(entries)
    check_parallel(entries, Path(path))
    check_has_text(entries, Path(path))
    return [sample for _, _, sample in entries]


def calm_code(lang: str) -> str:
    """The language code CALM's own file names use (``zh`` → ``cn``)."""
    return _CALM_CODES.get(lang, lang)


def llamafactory_names(pairs: list[PreferencePair], calm_names: bool = False,
                       prefix: str = "DPO") -> dict[str, str]:
    """Each language's dataset name in LLaMA-Factory, ``<prefix>_<lang>`` (its file is that
    name plus ``.json``), by the language code the pairs carry."""
    return {pair.lang: f"{prefix}_{calm_code(pair.lang) if calm_names else pair.lang}"
            for pair in pairs}


def export_llamafactory(
    pairs: list[PreferencePair], out_dir: str | Path | OutputFolder, calm_names: bool = False,
    prefix: str = "DPO",
) -> dict[str, int]:
    """Write ``<prefix>_<lang>.json`` files into ``out_dir`` and merge their entries into its
    ``dataset_info.json``, as LLaMA-Factory reads them.

    Returns rows per language code (as in the file names). The user's other files and
    ``dataset_info.json`` entries stay; ``out_dir`` may be an :class:`OutputFolder` already
    being staged (the CLI's).
    """
    names = llamafactory_names(pairs, calm_names, prefix)
    by_name: dict[str, list[dict]] = {}
    for pair in pairs:
        by_name.setdefault(names[pair.lang], []).append(
            {"instruction": pair.instruction, "input": pair.input,
             "chosen": pair.chosen, "rejected": pair.rejected}
        )
    info = {
        name: {"file_name": f"{name}.json", "ranking": True, "columns": dict(_RANKING_COLUMNS)}
        for name in by_name
    }
    if isinstance(out_dir, OutputFolder):
        _stage_llamafactory(out_dir, by_name, info)
    else:
        with output_folder(out_dir, field="out_dir") as folder:
            _stage_llamafactory(folder, by_name, info)
    return {name.removeprefix(f"{prefix}_"): len(rows) for name, rows in by_name.items()}


def _stage_llamafactory(folder: OutputFolder, by_name: dict[str, list[dict]],
                        info: dict[str, dict]) -> None:
    for name, rows in by_name.items():
        write_json(folder.path(f"{name}.json"), rows)
    folder.merge_json("dataset_info.json", info)
