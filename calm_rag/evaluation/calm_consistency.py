"""CALM's consistency score from LLaMA-Factory prediction files, as the authors' script gives it.

CALM's paper reports consistency computed by ``utils/get_consistency_score.py`` in the authors'
repository (github.com/wangym2/CALM, commit 9d2bac4), which reads the ``predict`` field of
LLaMA-Factory's ``generated_predictions.jsonl``, one file per language, rows paired by position.
Per row it reads one character per language, drops those outside the options, and scores the
share of equal pairs among what is left; the score is the mean over rows. Its quirks are kept,
since the point is the paper's number:

- the answer is the first character after the last occurrence of the language's literal marker
  (``Answer:``, ``答案:``, ...), stripped of whitespace; without the marker, the prediction's
  first character. "Answer: (B)" reads as "(", outside the options;
- its MedQA variant (options A-D) removes backticks first; its X-CSQA variant (A-E) does not;
- answers outside the options are dropped by removing from the list being iterated, so the
  answer after each removed one is never looked at, and may stay and be paired (two skipped
  "(" agree with each other);
- a row with fewer than two answers left scores 0 (its MedQA variant; the X-CSQA variant
  divides by zero there), and a prediction with nothing after its marker (where the script
  crashes) counts as an answer outside the options.

Beside it, the same files give our own accuracy and consistency (:mod:`metrics`), read by our
extractors: one sample per language and row, the gold from ``label`` where the files have it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from calm_rag.errors import InputError
from calm_rag.records import Question, Sample

PREDICTIONS_FILE = "generated_predictions.jsonl"
"""What LLaMA-Factory's ``do_predict`` writes: ``{prompt, predict, label}`` a line."""

CALM_MARKERS = {"en": "Answer:", "zh": "答案:", "fr": "Réponse:", "de": "Antwort:",
                "ja": "答え:", "it": "Risposta:"}
"""``get_ans_key``'s one literal marker per language (our codes; the script writes ``cn``)."""

SCRIPT_ORDER = ("en", "zh", "fr", "de", "ja", "it")
"""The order the script lists its files in. The removal quirk depends on it, so any set of
languages is read in this order (its MedQA variant's en, zh, fr is the start of it)."""


@dataclass(frozen=True)
class Variant:
    """One of the script's two functions: its options and whether it removes backticks."""

    name: str
    letters: str
    strip_backticks: bool


VARIANTS = {"medqa": Variant("medqa", "ABCD", True), "xcsqa": Variant("xcsqa", "ABCDE", False)}


@dataclass(frozen=True)
class Prediction:
    """One line of a prediction file."""

    text: str
    label: str | None
    line: int


@dataclass(frozen=True)
class CalmConsistency:
    """CALM's consistency of a set of prediction files, and ours on the same files."""

    variant: str
    languages: tuple[str, ...]
    """Our codes, in the order the script reads them."""
    files: dict[str, Path]
    calm: float
    """CALM's consistency, as its script computes it."""
    per_row: list[float]
    """Each row's share of agreeing pairs, as the script scores it."""
    ours: dict | None
    """Our metrics of the same files, as ``calm-rag metrics`` gives them for one setting
    (None when not asked for)."""

    def to_dict(self) -> dict:
        """What ``calm-rag metrics --policy calm --json`` prints (CALM's codes named too)."""
        from calm_rag.datasets.calm import calm_code

        return {"calm_consistency": self.calm, "variant": self.variant,
                "languages": list(self.languages),
                "calm_codes": [calm_code(lang) for lang in self.languages],
                "files": {lang: str(path) for lang, path in self.files.items()},
                "rows": len(self.per_row), "ours": self.ours}


# ---------------------------------------------------------------------------------------------
# CALM's reading and score


def calm_answer(prediction: str, lang: str, variant: Variant) -> str:
    """The character the script takes as ``lang``'s answer; ``""`` where it would crash."""
    text = prediction.replace("`", "") if variant.strip_backticks else prediction
    after = text.split(CALM_MARKERS[lang])[-1].strip()  # str.strip: whitespace only
    return after[:1]


def script_survivors(answers: Sequence[str], letters: str) -> list[str]:
    """What the script's ``for key in key_list: ... key_list.remove(key)`` leaves.

    A list iterator walks by position, so after a removal the next answer has moved into the
    removed one's place and is never looked at: it stays, in the options or not. (``remove``
    deletes the first equal answer, an earlier skipped one when there is one; being equal, it
    leaves the same answers behind.) Reproduced here step by step.
    """
    options = frozenset(letters)  # a set, not the string: "" is in every string
    left = list(answers)
    position = 0
    while position < len(left):
        answer = left[position]
        if answer not in options:
            del left[left.index(answer)]
        position += 1
    return left


def script_row_score(answers: Sequence[str], letters: str) -> float:
    """One row's score: the share of equal pairs among the survivors, 0 under two."""
    left = script_survivors(answers, letters)
    if len(left) < 2:
        return 0.0
    pairs = list(combinations(left, 2))
    return sum(a == b for a, b in pairs) / len(pairs)


# ---------------------------------------------------------------------------------------------
# Files


def prediction_files(specs: Sequence[str | Path]) -> dict[str, Path]:
    """Our code → prediction file, from ``LANG=FILE`` pairs (FILE may be a folder holding
    ``generated_predictions.jsonl``) or one folder with a subfolder per language code."""
    if len(specs) == 1 and "=" not in str(specs[0]):
        return _language_folders(Path(specs[0]))
    files: dict[str, Path] = {}
    for spec in specs:
        code, sep, name = str(spec).partition("=")
        if not sep or not code or not name:
            raise InputError(f"{spec!r} is not LANG=FILE", field="--predictions",
                             hint="e.g. en=preds/en/generated_predictions.jsonl cn=...")
        path = Path(name)
        _add(files, _code(code, path), path / PREDICTIONS_FILE if path.is_dir() else path)
    return files


def _language_folders(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError("is not a folder", path=folder, field="--predictions",
                         hint="give a folder of language subfolders, or LANG=FILE pairs")
    files: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (sub / PREDICTIONS_FILE).is_file():
            _add(files, _code(sub.name, sub), sub / PREDICTIONS_FILE)
    if not files:
        raise InputError(f"no subfolder holds {PREDICTIONS_FILE}", path=folder,
                         field="--predictions", hint="one subfolder per language: en/, cn/, ...")
    return files


def _code(code: str, where: Path) -> str:
    """Our code for the authors' (``cn``) or ours; the script reads its six languages only."""
    from calm_rag.languages import normalize_code

    try:
        lang = normalize_code(code)
    except InputError as err:
        raise InputError(err.message, path=where, field="--predictions", hint=err.hint) from None
    if lang not in CALM_MARKERS:
        raise InputError(f"CALM's script has no answer marker for {code!r}", path=where,
                         field="--predictions", hint="it reads en, cn (zh), fr, de, ja, it")
    return lang


def _add(files: dict[str, Path], lang: str, path: Path) -> None:
    if lang in files:
        raise InputError(f"a second file for {lang} (the first: {files[lang]})", path=path,
                         field="--predictions", hint="cn and zh are the same language")
    files[lang] = path


def read_predictions(path: Path) -> list[Prediction]:
    """The rows of one ``generated_predictions.jsonl``; ``predict`` is required."""
    from calm_rag.io import expect, read_jsonl

    return [Prediction(expect(row, "predict", str, path, line),
                       expect(row, "label", (str, type(None)), path, line, default=None), line)
            for line, row in read_jsonl(path)]


def _check_lengths(rows: dict[str, list[Prediction]], files: dict[str, Path]) -> None:
    """Rows pair by position: files of different lengths would pair the wrong rows."""
    counts = {lang: len(r) for lang, r in rows.items()}
    if len(set(counts.values())) > 1:
        short = min(counts, key=lambda lang: counts[lang])
        long = max(counts, key=lambda lang: counts[lang])
        raise InputError(
            f"{counts[long]} predictions, but {counts[short]} in {files[short]}",
            path=files[long], line=rows[long][counts[short]].line,
            hint="the files must hold the same questions in the same order (CALM's script "
                 "stops at the shortest file; remove the extra rows so that rows pair)")


# ---------------------------------------------------------------------------------------------
# Both scores


def default_variant(languages: Sequence[str]) -> str:
    """The script's function that takes exactly these languages: ``medqa`` for en, zh, fr,
    ``xcsqa`` for all six; any other set must say which (the options differ: A-D or A-E)."""
    if set(languages) == {"en", "zh", "fr"}:
        return "medqa"
    if set(languages) == set(SCRIPT_ORDER):
        return "xcsqa"
    raise InputError(f"CALM's script has no function for {', '.join(languages)}: say which "
                     "of its variants to follow", field="--calm-variant",
                     hint="medqa (options A-D, backticks removed) or xcsqa (options A-E)")


def calm_consistency(files: dict[str, Path], variant: str,
                     chain: Sequence[str] | None = None, ours: bool = True) -> CalmConsistency:
    """CALM's consistency of ``files`` (our code → prediction file) as the script computes it,
    ``variant`` ``medqa`` or ``xcsqa``; and, with ``ours``, our metrics of the same files
    (``chain``: our extractors, the standard chain by default; their bootstrap intervals take
    most of the time)."""
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}", field="variant",
                         hint="medqa (options A-D) or xcsqa (options A-E)")
    if len(files) < 2:
        raise InputError("consistency needs at least two languages", field="--predictions")
    chosen = VARIANTS[variant]
    langs = tuple(lang for lang in SCRIPT_ORDER if lang in files)
    rows = {lang: read_predictions(files[lang]) for lang in langs}
    _check_lengths(rows, files)
    n = len(rows[langs[0]])
    per_row = [script_row_score([calm_answer(rows[lang][i].text, lang, chosen)
                                 for lang in langs], chosen.letters) for i in range(n)]
    metrics = our_metrics(rows, files, chosen.letters, chain) if ours else None
    return CalmConsistency(variant, langs, dict(files), sum(per_row) / n, per_row, metrics)


def our_metrics(rows: dict[str, list[Prediction]], files: dict[str, Path], letters: str,
                chain: Sequence[str] | None = None) -> dict:
    """Our accuracy, consistency and agreement of the same predictions, one sample per
    language and row. The files hold no option texts, so only labels are read ("Answer: B",
    "(B)"), never an option's text."""
    from calm_rag.evaluation.metrics import compute_metrics
    from calm_rag.vote.answers import DEFAULT_CHAIN, extract_samples

    options = dict.fromkeys(letters, "")
    golds = [_gold(rows, files, i, options) for i in range(len(next(iter(rows.values()))))]
    samples = [Sample(Question(id=str(i + 1), lang=lang, stem="", options=options,
                               answer=golds[i], source="predictions"), text=p.text)
               for lang, preds in rows.items() for i, p in enumerate(preds)]
    return compute_metrics(extract_samples(samples, chain or DEFAULT_CHAIN))["zero-shot"]


def _gold(rows: dict[str, list[Prediction]], files: dict[str, Path], i: int,
          options: dict[str, str]) -> str | None:
    """Row ``i``'s gold letter from its labels; languages whose labels name different
    letters are not the same question, and are refused."""
    found: dict[str, str] = {}
    for lang, preds in rows.items():
        label = preds[i].label
        letter = label_letter(label, lang, options) if label else None
        if letter is None:
            continue
        other = next((o for o, g in found.items() if g != letter), None)
        if other is not None:
            raise InputError(
                f"the label says {letter}, but {found[other]} in {files[other]}:"
                f"{rows[other][i].line}", path=files[lang], line=preds[i].line,
                field="label", hint="rows pair by position: the files must hold the same "
                                    "questions in the same order")
        found[lang] = letter
    return next(iter(found.values()), None)


def label_letter(label: str, lang: str, options: dict[str, str]) -> str | None:
    """The letter a ``label`` names: CALM's ``(B) text`` / ``B. text``, or a response in the
    ``Answer: B`` format read by the standard chain."""
    from calm_rag.datasets.entry import leading_label
    from calm_rag.vote.answers import extract_answer

    return leading_label(label, options) or extract_answer(label, lang, options).answer


def format_calm_consistency(result: CalmConsistency) -> str:
    """The lines ``calm-rag metrics --policy calm`` prints above our own table."""
    from calm_rag.datasets.calm import calm_code

    named = ", ".join(calm_code(lang) for lang in result.languages)
    return (f"CALM's consistency ({result.variant} variant of utils/get_consistency_score.py, "
            f"{named}; {len(result.per_row)} rows): {result.calm:.4f}")


# ---------------------------------------------------------------------------------------------
# The paper's table: accuracy per language and both consistencies, before and after


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table: one phase (and setting) of one set of samples."""

    label: str
    """``before``, ``after``, or a run's ``heldout/before``; the setting added beside rag."""
    samples_per_question: int
    """Samples per language and question (CALM's release: 3; an evaluation: 1)."""
    ours: dict
    """Our metrics of the samples, as ``calm-rag metrics`` gives them for one setting."""
    calm: dict
    """CALM's consistency as its script scores it: ``value``, ``ci95``, ``n``."""
    variant: str
    """The script's function that scored it (``medqa`` or ``xcsqa``)."""

    def to_dict(self) -> dict:
        """What ``calm-rag metrics --paper-table --json`` prints for the row."""
        return {"phase": self.label, "samples_per_question": self.samples_per_question,
                "calm_consistency": self.calm, "variant": self.variant, "ours": self.ours}


def calm_rows_of_samples(samples: Sequence[Sample], variant: Variant) -> list[float]:
    """Per question, the script's row score of each sample index (the k-th sample of every
    language forms one prediction set, as one ``generated_predictions.jsonl`` per language
    would), averaged over the indices: with one sample a language, the script's own score.

    A question missing a language, or with a different number of samples in one, would
    pair the wrong answers: refused."""
    questions: dict[str, dict[str, dict[int, Sample]]] = {}
    for s in samples:
        by_index = questions.setdefault(s.question.id, {}).setdefault(s.lang, {})
        if s.index in by_index:  # a repeated sample would be counted twice
            raise InputError(f"question {s.question.id} has sample {s.index} in {s.lang} twice",
                             field="SAMPLES", hint="give each sample once")
        by_index[s.index] = s
    langs = tuple(lang for lang in SCRIPT_ORDER
                  if any(lang in by_lang for by_lang in questions.values()))
    _check_script_languages(samples)
    scores = []
    for qid, by_lang in questions.items():
        indices = _same_indices(qid, by_lang, langs)
        scores.append(sum(script_row_score(
            [calm_answer(by_lang[lang][k].text, lang, variant) for lang in langs],
            variant.letters) for k in indices) / len(indices))
    return scores


def _check_script_languages(samples: Sequence[Sample]) -> None:
    """The script has a marker for its six languages only."""
    other = sorted({s.lang for s in samples} - set(CALM_MARKERS))
    if other:
        raise InputError(f"CALM's script has no answer marker for {', '.join(other)}",
                         field="SAMPLES", hint="it reads en, cn (zh), fr, de, ja, it")


def _same_indices(qid: str, by_lang: dict[str, dict[int, Sample]],
                  langs: tuple[str, ...]) -> list[int]:
    """The sample indices of a question, the same in every language, or a one-line error."""
    missing = [lang for lang in langs if lang not in by_lang]
    if missing:
        raise InputError(f"question {qid} has no sample in {', '.join(missing)}",
                         field="SAMPLES", hint="CALM's score pairs every language's answer "
                                               "to a question: give all of them")
    indices = {lang: sorted(by_lang[lang]) for lang in langs}
    first = indices[langs[0]]
    odd = next((lang for lang in langs if indices[lang] != first), None)
    if odd is not None:
        raise InputError(f"question {qid} has samples {indices[odd]} in {odd} but {first} in "
                         f"{langs[0]}", field="SAMPLES",
                         hint="CALM's score pairs the k-th samples of every language")
    return first


def options_variant(samples: Sequence[Sample]) -> str:
    """The script's function for the questions' options: ``medqa`` for A-D, ``xcsqa`` for
    A-E (by the languages instead, X-CSQA in en, zh, fr would be scored as MedQA, its E
    answers dropped)."""
    letters = "".join(sorted({label for s in samples for label in s.question.options}))
    found = next((v.name for v in VARIANTS.values() if v.letters == letters), None)
    if found is None:
        raise InputError(f"the questions' options are {letters or 'none'}: CALM's script has "
                         "a function for A-D (medqa) and A-E (xcsqa) only",
                         field="--calm-variant", hint="say which to follow: medqa or xcsqa")
    return found


def paper_row(label: str, samples: Sequence[Sample], variant: str | None) -> PaperRow:
    """The paper's row of one phase's samples (one setting): our accuracy and consistency,
    and CALM's consistency (``variant``: the script's function; by default the one for the
    questions' options)."""
    from calm_rag.evaluation.metrics import compute_metrics, value_summary

    settings = compute_metrics(samples)
    if len(settings) != 1:
        raise InputError(f"{label}: samples of several settings ({', '.join(settings)})",
                         field="SAMPLES", hint="give one setting's samples a row")
    ours = next(iter(settings.values()))
    chosen = VARIANTS[variant or options_variant(samples)]
    per_question = max(sum(1 for s in samples if s.question.id == samples[0].question.id
                           and s.lang == samples[0].lang), 1)
    return PaperRow(label, per_question, ours,
                    value_summary(calm_rows_of_samples(samples, chosen)), chosen.name)


PHASE_ORDER = ("before", "after")


def paper_sources(path: Path) -> list[tuple[str, Path]]:
    """What the paper's table reads from ``path``: a run folder's evaluation files, or one
    of them (``eval/<split>-<phase>.jsonl``, labelled ``split/phase``, before first), or one
    set of samples (CALM's released sample files, a samples JSONL) labelled ``before``."""
    from calm_rag.evaluation.cells import Cell

    evals = path / "eval"
    if path.is_file() and path.parent.name == "eval" and path.suffix == ".jsonl":
        files = [path]  # one of a run's files: its own phase, never taken for "before"
    elif evals.is_dir():
        files = sorted(evals.glob("*.jsonl"))
    else:
        return [("before", path)]
    try:
        cells = [(Cell.parse(f.stem.replace("-", "/", 1)), f) for f in files]
    except ValueError as err:
        raise InputError(str(err), path=files[0].parent, hint="a run's files are named "
                                                             "<split>-<phase>.jsonl") from None
    if not cells:
        raise InputError("a run folder without evaluation files", path=evals,
                         hint="the run's eval/<split>-<phase>.jsonl are read")
    rank = {phase: i for i, phase in enumerate(PHASE_ORDER)}
    cells.sort(key=lambda c: (c[0].split, rank.get(c[0].phase, len(rank)), c[0].phase))
    return [(str(cell), f) for cell, f in cells]


def paper_rows(sources: Sequence[tuple[str, Sequence[Sample]]],
               variant: str | None = None) -> list[PaperRow]:
    """The table's rows: per source (label, its extracted samples) and per setting."""
    rows = []
    for label, samples in sources:
        settings = list(dict.fromkeys(s.setting for s in samples))
        for setting in settings:
            chosen = [s for s in samples if s.setting == setting]
            named = label if settings == ["zero-shot"] else f"{label}, {setting}"
            rows.append(paper_row(named, chosen, variant))
    return rows
