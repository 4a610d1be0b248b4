"""What the explorer shows, gathered from a run folder's files into one JSON-able dict.

The page lists every question from a small index (split, a stem excerpt, consistency per
setting and phase, filter flags); each question's detail (texts, vote, passages, pairs,
evaluation answers) goes into the page as one JSON line of its own, parsed and drawn only when
the question is opened (see :mod:`calm_rag.explore.page`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from calm_rag.errors import InputError
from calm_rag.evaluation.cells import Cell
from calm_rag.io import read_json_object, read_jsonl, read_text
from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.runs import RunFolder

STEM_CHARS = 120
FALLBACK_METHOD = "logprob"  # what letter_scores.fill_unanswered records as the extraction


def set_data(run: RunFolder) -> dict[str, Any]:
    """One run's page data: its header, plots, question index and per-question details."""
    split_of = question_splits(run)
    details: dict[str, dict[str, Any]] = {}
    for qid, split in split_of.items():
        details[qid] = {"id": qid, "split": split, "questions": {}, "gold": None,
                        "alignment": {}, "votes": {}, "retrieved": {}, "pairs": [],
                        "eval": {}}
    add_alignment(details, run.samples(), run.round_dir() / "samples.jsonl")
    add_votes(details, run.votes(), run.round_dir() / "votes.jsonl")
    add_pairs(details, run.pairs(), run.round_dir() / "pairs.jsonl")
    add_retrieved(details, run.path / "retrieved.jsonl")
    grid = run.grid
    for cell, samples in run.eval_cells().items():
        add_eval(details, cell, samples, split_of, run.path / "eval"
                 / f"{Cell.parse(cell).file_stem}.jsonl")
    return {"header": header(run), "plots": plots(run.path),
            "index": [index_entry(details[qid], grid) for qid in details],
            "details": details}


def question_splits(run: RunFolder) -> dict[str, str]:
    """Question id → its split, from the manifest (one split per question, or refused)."""
    splits = run.manifest.get("questions") or {}
    split_of: dict[str, str] = {}
    for split, ids in splits.items():
        for qid in ids:
            if split_of.setdefault(str(qid), split) != split:
                raise InputError(f"question {qid!r} is in two splits ({split_of[str(qid)]}, "
                                 f"{split})", path=run.path / "manifest.json",
                                 field="questions")
    return split_of


def _detail(details: dict[str, dict], qid: str, path: Path) -> dict[str, Any]:
    """The question's detail; a record of a question the manifest does not list is refused
    (it would be shown under no split, or mixed into another run's)."""
    if qid not in details:
        raise InputError(f"question {qid!r} is not among the manifest's questions",
                         path=path, hint="is this file from another run?")
    return details[qid]


def _sample_row(sample: Sample) -> dict[str, Any]:
    return {"i": sample.index, "a": sample.answer, "x": sample.extraction, "t": sample.text}


def _add_question(detail: dict[str, Any], sample: Sample, path: Path) -> None:
    """The question as asked in the sample's language (stem, options) and its gold; another
    wording or gold of the same question and language is refused (files of two runs)."""
    question = sample.question
    asked = {"stem": question.stem, "options": question.options}
    if detail["questions"].setdefault(question.lang, asked) != asked:
        raise InputError(f"question {question.id!r} ({question.lang}) reads differently here "
                         "than in the run's other files", path=path,
                         hint="is this file from another run?")
    if question.answer is not None:
        if detail["gold"] not in (None, question.answer):
            raise InputError(f"question {question.id!r}: gold {question.answer!r} here, "
                             f"{detail['gold']!r} in the run's other files", path=path)
        detail["gold"] = question.answer


def add_alignment(details: dict[str, dict], samples: Iterable[Sample], path: Path) -> None:
    """The alignment samples per setting and language, in sample order."""
    for sample in samples:
        detail = _detail(details, sample.question.id, path)
        _add_question(detail, sample, path)
        by_lang = detail["alignment"].setdefault(sample.setting, {})
        by_lang.setdefault(sample.lang, []).append(_sample_row(sample))


def add_votes(details: dict[str, dict], votes: Iterable[Vote], path: Path) -> None:
    """The cross-lingual vote per setting; a second vote on one question and setting is
    refused (it would hide which one made the pairs)."""
    for vote in votes:
        detail = _detail(details, vote.question_id, path)
        if vote.setting in detail["votes"]:
            raise InputError(f"two votes on question {vote.question_id!r} in setting "
                             f"{vote.setting!r}", path=path)
        detail["votes"][vote.setting] = {
            "answer": vote.answer, "status": vote.status, "counts": vote.counts,
            "by_language": vote.by_language, "n_responses": vote.n_responses,
            "n_parsed": vote.n_parsed}


def add_pairs(details: dict[str, dict], pairs: Iterable[PreferencePair], path: Path) -> None:
    """The DPO rows built from each question."""
    for pair in pairs:
        _detail(details, pair.question_id, path)["pairs"].append({
            "lang": pair.lang, "setting": pair.setting, "target": pair.target,
            "source": pair.chosen_source, "chosen_answer": pair.chosen_answer,
            "rejected_answer": pair.rejected_answer, "chosen": pair.chosen,
            "rejected": pair.rejected, "chosen_id": pair.chosen_sample_id,
            "rejected_id": pair.rejected_sample_id})


def add_retrieved(details: dict[str, dict], path: Path) -> None:
    """Each question's passages per query language (absent in a zero-shot-only run)."""
    if not path.is_file():
        return
    for line, row in read_jsonl(path, allow_empty=True):
        qid, lang = str(row.get("question_id")), row.get("lang")
        detail = _detail(details, qid, path)
        if not isinstance(lang, str) or not isinstance(row.get("hits"), list):
            raise InputError("a row needs 'lang' and a list of 'hits'", path=path, line=line)
        if lang in detail["retrieved"]:
            raise InputError(f"question {qid!r} has two rows for language {lang!r}",
                             path=path, line=line)
        detail["retrieved"][lang] = [
            {key: hit.get(key) for key in ("rank", "score", "lang", "doc_id", "title", "text",
                                           "rerank_score", "retrieval_rank")
             if key in hit} for hit in row["hits"]]


def add_eval(details: dict[str, dict], cell: str, samples: Iterable[Sample],
             split_of: dict[str, str], path: Path) -> None:
    """One evaluation cell's answers per setting and language; a question evaluated in a
    cell of another split than the manifest's is refused (it would be mis-paired)."""
    split = Cell.parse(cell).split
    for sample in samples:
        qid = sample.question.id
        detail = _detail(details, qid, path)
        if split_of[qid] != split:
            raise InputError(f"question {qid!r} of split {split_of[qid]!r} evaluated in "
                             f"cell {cell!r}", path=path)
        _add_question(detail, sample, path)
        by_setting = detail["eval"].setdefault(cell, {}).setdefault(sample.setting, {})
        by_setting.setdefault(sample.lang, []).append(_sample_row(sample))


def majority(rows: list[dict[str, Any]]) -> str | None:
    """A language's answer in a cell: its most frequent parsed answer (first seen on a tie),
    None where none parsed."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["a"] is not None:
            counts[row["a"]] = counts.get(row["a"], 0) + 1
    return max(counts, key=lambda a: counts[a]) if counts else None


def index_entry(detail: dict[str, Any], grid: dict[str, Any]) -> dict[str, Any]:
    """The question's row of the questions table: split, stem excerpt, consistency per
    setting and phase (metrics.json's), and the filter flags per setting."""
    qid, split = detail["id"], detail["split"]
    stems = [q["stem"] for q in detail["questions"].values()]
    stem = stems[0] if stems else ""
    cells = {name: cell for name, cell in grid["cells"].items()
             if Cell.parse(name).split == split}
    consistency: dict[str, dict[str, float | None]] = {}
    for name, cell in cells.items():
        for setting, by_q in cell.get("consistency_by_question", {}).items():
            consistency.setdefault(setting, {})[Cell.parse(name).phase] = by_q.get(qid)
    return {"id": qid, "split": split,
            "stem": stem if len(stem) <= STEM_CHARS else stem[:STEM_CHARS - 1] + "…",
            "consistency": consistency, "flags": flags(detail, cells, consistency)}


def flags(detail: dict[str, Any], cells: dict[str, Any],
          consistency: dict[str, dict[str, float | None]]) -> dict[str, list[str]]:
    """Per setting: ``disagree`` (the first phase's consistency below 1), ``changed`` (a
    language's answer differs between the first and the last phase), ``helped``/``hurt``
    (retrieval changed a language's answer to right/wrong in some cell), ``fallback`` (a
    sample answered by the log-prob fallback)."""
    qid = detail["id"]
    delta = {kind for cell in cells.values() if cell.get("retrieval_delta")
             for kind in ("helped", "hurt")
             if any(qid in ids for ids in cell["retrieval_delta"]["questions"]
                    .get(kind, {}).values())}
    phases = [Cell.parse(name).phase for name in cells]
    out: dict[str, list[str]] = {}
    for setting in dict.fromkeys([*consistency, *detail["alignment"]]):
        found = sorted(delta)
        first = consistency.get(setting, {}).get(phases[0]) if phases else None
        if first is not None and first < 1:
            found.append("disagree")
        if len(phases) > 1 and _changed(detail, setting, phases[0], phases[-1]):
            found.append("changed")
        if _fallback(detail, setting):
            found.append("fallback")
        out[setting] = found
    return out


def _changed(detail: dict[str, Any], setting: str, first: str, last: str) -> bool:
    split = detail["split"]
    before = detail["eval"].get(f"{split}/{first}", {}).get(setting, {})
    after = detail["eval"].get(f"{split}/{last}", {}).get(setting, {})
    return any(majority(before[lang]) != majority(after[lang])
               for lang in before if lang in after)


def _fallback(detail: dict[str, Any], setting: str) -> bool:
    rows = [*[r for rs in detail["alignment"].get(setting, {}).values() for r in rs],
            *[r for cell in detail["eval"].values()
              for rs in cell.get(setting, {}).values() for r in rs]]
    return any(row["x"] == FALLBACK_METHOD for row in rows)


def header(run: RunFolder) -> dict[str, Any]:
    """The run's name, creation time, languages, settings and vote configuration."""
    manifest = run.manifest
    config_path = run.path / "config.yaml"
    config = yaml.safe_load(read_text(config_path)) if config_path.is_file() else {}
    config = config if isinstance(config, dict) else {}
    vote = config.get("vote") or {}
    data = config.get("data") or {}
    return {"experiment": manifest.get("experiment", run.name),
            "created": manifest.get("created"), "folder": run.path.name,
            "languages": data.get("languages") or [], "settings": config.get("settings") or [],
            "policy": vote.get("policy"), "tie": vote.get("tie"),
            "weights": vote.get("weights") or {}, "min_agreement": vote.get("min_agreement")}


def plots(folder: Path) -> list[dict[str, str]]:
    """The report's PNG plots, inline as data URIs (the page must open from disk alone)."""
    return [{"name": png.stem,
             "src": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()}
            for png in sorted((folder / "plots").glob("*.png"))]


def resolve_folder(path_or_name: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run or grid folder by its path, or the newest one of an experiment (its folder, or
    its bare name in ``runs_dir``), as :func:`calm_rag.runs.open_run` finds them."""
    from calm_rag.runs import latest_run

    folder = Path(path_or_name)
    if (folder / "manifest.json").is_file() or (folder / "grid.json").is_file():
        return folder
    if (folder / "LATEST").is_file():
        return latest_run(folder.name, folder.parent)
    if len(folder.parts) == 1:
        return latest_run(folder.name, runs_dir)
    return RunFolder(folder).path  # refused there, with the hint


def explorer_data(folder: Path) -> dict[str, Any]:
    """The page data of a run folder, or of a language-set grid folder (one entry per set)."""
    if (folder / "grid.json").is_file():
        return {"title": f"calm_rag language sets: {folder.parent.name} ({folder.name})",
                "sets": {name: set_data(RunFolder(path))
                         for name, path in grid_sets(folder).items()}}
    run = RunFolder(folder)
    return {"title": f"calm_rag run: {run.name} ({run.path.name})", "sets": {"": set_data(run)}}


def grid_sets(folder: Path) -> dict[str, Path]:
    """A language-set grid's runs: set name → run folder. A path stored relative to where the
    grid ran is looked for beside the grid's experiment folder (the same runs folder)."""
    grid = read_json_object(folder / "grid.json")
    sets = grid.get("language_sets")
    if not isinstance(sets, dict) or not sets:
        raise InputError("no language sets", path=folder / "grid.json", field="language_sets")
    found = {}
    for name, summary in sets.items():
        stored = Path(str(summary.get("folder", "")))
        candidates = [stored, folder.parent.parent / stored.parent.name / stored.name]
        path = next((p for p in candidates if (p / "manifest.json").is_file()), None)
        if path is None:
            raise InputError(f"language set {name!r}: its run folder {stored} is missing",
                             path=folder / "grid.json", field=f"language_sets.{name}.folder")
        found[name] = path
    return found
