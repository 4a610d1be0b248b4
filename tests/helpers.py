"""Helpers several test modules share (no test module imports another)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from calm_rag.cli import main
from calm_rag.datasets.samples import write_samples
from calm_rag.records import PreferencePair, Question, Sample
from calm_rag.training import LoraConfig


def experiment(tiny: Path, runs: Path, **changes) -> dict:
    """A small experiment on the tiny model: 4 train + 2 held-out questions, 2 languages.

    ``changes`` set nested keys, ``evaluation__option_scores=True`` for
    ``evaluation.option_scores``."""
    data = {
        "name": "tiny",
        "data": {"source": "bundled", "dataset": "commonsense", "languages": ["en", "fr"],
                 "train": 4, "heldout": 2},
        "generator": {"backend": "hf", "model": str(tiny),
                      "options": {"batch_size": 4, "threads": 1}},
        "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 12, "seed": 1},
        "retrieval": {"enabled": False},
        "vote": {"chosen_fallback": "pivot"},
        "align": {"epochs": 1, "batch_size": 4, "max_length": 256, "learning_rate": 1e-3,
                  "threads": 1},
        "evaluation": {"sampling": {"n": 1, "temperature": 0.0, "max_tokens": 12}},
        "shard_questions": 2,
        "runs_dir": str(runs),
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def write_experiment(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_cli(path: Path, *args: str) -> int:
    return main(["run", str(path), "--quiet", *args])


def latest_run(runs: Path, name: str = "tiny") -> Path:
    folder = runs / name
    return folder / (folder / "LATEST").read_text().strip()


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CALM_REFERENCE = SHARED / "calm-reference" / "xcsqa"
CALM_MEDQA = SHARED / "calm-reference" / "medqa" / "test"

OPTIONS = {"A": "town", "B": "school", "C": "hospital", "D": "office"}


def make_samples(answers: dict[str, list[str | None]], qid: str = "q1", gold: str | None = "C",
                 setting: str = "zero-shot") -> list[Sample]:
    """Samples of one question: ``{"en": ["C", "A"], ...}``, text saying the answer."""
    samples = []
    for lang, letters in answers.items():
        question = Question(id=qid, lang=lang, stem=f"stem in {lang}", options=OPTIONS,
                            answer=gold)
        for index, letter in enumerate(letters):
            text = f"{lang} response {index}: Answer: {letter}" if letter else f"{lang} babble"
            samples.append(Sample(question=question, text=text, index=index, setting=setting,
                                  answer=letter, extraction="marker_letter" if letter else "none",
                                  instruction=f"instruction {lang}", input=f"input {lang}"))
    return samples


def samples_file(tmp_path: Path) -> Path:
    """Two questions in en/zh/fr as a samples JSONL whose answers are still to extract."""
    samples = (make_samples({"en": ["C", "A"], "zh": ["C", "B"], "fr": ["C"]}, qid="q1")
               + make_samples({"en": ["B"], "zh": ["B"], "fr": ["B"]}, qid="q2", gold="B"))
    # Let the CLI extract the answers from the text, as it does for fresh samples.
    raw = [s.__class__(**{**s.__dict__, "answer": None, "extraction": ""}) for s in samples]
    write_samples(tmp_path / "samples.jsonl", raw)
    return tmp_path / "samples.jsonl"


# ---------------------------------------------------------------------------- index specs

DOCS = [
    ("heart", "en", "Heart", "The heart pumps blood; the left ventricle feeds the aorta."),
    ("lungs", "en", "Lungs", "Oxygen enters the blood in the alveoli of the lungs."),
    ("kidney", "en", "Kidney", "The kidneys filter the blood; the nephron makes urine."),
    ("liver", "fr", "Foie", "Le foie transforme les médicaments et produit la bile."),
    ("bone", "en", "Bone", "The femur is the longest bone of the human skeleton."),
    ("insulin", "en", "Insulin", "Insulin from the pancreas lowers blood glucose."),
    ("xinzang", "zh", "心脏", "心脏是循环系统的中心，负责把血液泵到全身。"),
    ("skin", "en", "Skin", "The skin is the largest organ and protects against infection."),
    ("brain", "de", "Gehirn", "Das Gehirn steuert die Atmung und den Kreislauf."),
]

SPEC = """\
name: tiny
corpus:
  - type: jsonl
    path: corpus.jsonl
chunking: {{chunk_size: 48, chunk_overlap: 8}}
embedder: {{model: all-MiniLM-L6-v2, batch_size: 4, shard_size: 2}}
faiss: {{factory: "{factory}", metric: ip}}
"""


def make_project(root: Path, factory: str = "Flat", docs=DOCS) -> Path:
    """A corpus and its spec in ``root``; returns the spec path."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "lang": lang, "title": t, "text": x} for i, lang, t, x in docs]
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    spec = root / "tiny.yaml"
    spec.write_text(SPEC.format(factory=factory), encoding="utf-8")
    return spec


# ---------------------------------------------------------------------------- training rows

MILK_INSTRUCTION = "Answer the question with the letter A, B or C."
MILK_STEMS = ["Where is milk kept?", "Where should milk be kept?", "Where is milk stored?",
         "Where do you keep milk?"]
MILK_OPTIONS = {"A": "pantry", "B": "refrigerator", "C": "oven"}


def milk_input(stem: str) -> str:
    """A milk question's input: the stem and its three options."""
    return f"Question: {stem}\n" + "\n".join(f"{k}. {v}" for k, v in MILK_OPTIONS.items())


def milk_pairs() -> list[PreferencePair]:
    """8 DPO pairs (4 questions twice) preferring the refrigerator over the pantry."""
    return [PreferencePair(
        question_id=f"q{i}", lang="en", setting="zero-shot", instruction=MILK_INSTRUCTION,
        input=milk_input(stem), chosen="Answer: B. refrigerator", rejected="Answer: A. pantry",
        chosen_answer="B", rejected_answer="A", vote_counts={"B": 4, "A": 2},
        chosen_sample_id=f"q{i}/en/zero-shot/0", rejected_sample_id=f"q{i}/en/zero-shot/1",
    ) for i, stem in enumerate(MILK_STEMS)] * 2


def milk_samples() -> list[Sample]:
    """8 samples (4 questions twice) answering B, refrigerator."""
    samples = []
    for i, stem in enumerate(MILK_STEMS):
        question = Question(id=f"q{i}", lang="en", stem=stem, options=MILK_OPTIONS, answer="B")
        samples.append(Sample(question=question, text="Answer: B. refrigerator", index=0,
                              answer="B", extraction="marker_letter",
                              instruction=MILK_INSTRUCTION, input=milk_input(stem)))
    return samples * 2


ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TINY_ALIGN = dict(learning_rate=2e-2, batch_size=1, max_length=96, threads=1, precision="fp32",
                  lora=LoraConfig(r=4, alpha=8, dropout=0.0, targets=ALL_LINEAR))
"""``AlignConfig`` keys for a training of seconds: few rows, short rows, one thread a rank
(the machine running the tests is small and shared)."""


def as_format_1(folder: Path) -> None:
    """Rewrite a built index into the layout calm_rag wrote before format 2: chunks.jsonl,
    no chunk store, no saved BM25, a format-1 manifest listing two files."""
    from calm_rag.retrieval import manifest as mf
    from calm_rag.retrieval.retriever import open_chunks
    from calm_rag.runtime.provenance import file_entry

    manifest = mf.read_manifest(folder)
    store = open_chunks(folder, manifest)
    with (folder / "chunks.jsonl").open("w", encoding="utf-8") as handle:
        for batch in store.iter_batches():
            for chunk in batch:
                handle.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
    del store
    for name in manifest["files"]:
        if name != mf.INDEX_FILE:
            (folder / name).unlink()
    manifest["format"] = 1
    manifest.pop("lexical")
    manifest["chunks"] = {k: v for k, v in manifest["chunks"].items()
                          if k not in ("file", "languages_file", "language_codes")}
    manifest["files"] = {name: file_entry(folder / name)
                         for name in (mf.INDEX_FILE, "chunks.jsonl")}
    mf.write_manifest(folder, manifest)


# ---------------------------------------------------------------------------- browser

CHROMIUM_MISSING = "no chromium on PATH (make test installs it with apt-get as root)"


def chromium_path() -> str | None:
    """Debian's chromium, for playwright's ``executable_path`` (playwright's own browser
    download is not reachable here); None where there is none."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def headless_chromium(sync_api: Any) -> Iterator[Any]:
    """Debian's chromium driven by playwright (``sync_api``: the module the test imported or
    skipped on), closed on exit."""
    with sync_api.sync_playwright() as p:
        # --no-sandbox: Chromium refuses its sandbox as root (CI containers).
        launched = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        launched.close()


# ---------------------------------------------------------------------------- run folders

HOSTILE = "</script><b>x</b>"
# A hand-made run (gold C for q1, B for q2, A for q3; q1, q2 train, q3 heldout; en, zh, fr),
# per setting and phase each language's one evaluation answer. q1: zh right only with
# retrieval (helped); q3: en right only without (hurt), zh unanswered before.
EXPLORE_EVAL = {
    "zero-shot": {
        "before": {"q1": {"en": "C", "zh": "A", "fr": "A"}, "q2": {"en": "B", "zh": "B", "fr": "B"},
                   "q3": {"en": "A", "zh": None, "fr": "A"}},
        "after": {"q1": {"en": "C", "zh": "C", "fr": "C"}, "q2": {"en": "B", "zh": "B", "fr": "B"},
                  "q3": {"en": "A", "zh": "A", "fr": "A"}}},
    "rag": {
        "before": {"q1": {"en": "C", "zh": "C", "fr": "A"}, "q2": {"en": "B", "zh": "B", "fr": "B"},
                   "q3": {"en": "B", "zh": None, "fr": "A"}},
        "after": {"q1": {"en": "C", "zh": "C", "fr": "C"}, "q2": {"en": "B", "zh": "B", "fr": "B"},
                  "q3": {"en": "A", "zh": "A", "fr": "A"}}},
}
EXPLORE_GOLD = {"q1": "C", "q2": "B", "q3": "A"}
EXPLORE_SPLITS = {"train": ["q1", "q2"], "heldout": ["q3"]}
# The alignment samples of the train questions (two per language); q1's second zh one holds
# HOSTILE as its text.
EXPLORE_ALIGNMENT = {"q1": {"en": ["C", "C"], "zh": ["A", "C"], "fr": ["A", None]},
                     "q2": {"en": ["B", "B"], "zh": ["B", "A"], "fr": ["B", "B"]}}


def explore_eval_samples(split: str, phase: str) -> list[Sample]:
    """One evaluation cell of the hand-made run; q3's after/zero-shot en answer came from the
    log-prob fallback."""
    from dataclasses import replace

    out = []
    for setting, phases in EXPLORE_EVAL.items():
        for qid in EXPLORE_SPLITS[split]:
            answers = {lang: [a] for lang, a in phases[phase][qid].items()}
            for s in make_samples(answers, qid=qid, gold=EXPLORE_GOLD[qid], setting=setting):
                fallback = (qid, setting, phase, s.lang) == ("q3", "zero-shot", "after", "en")
                out.append(replace(s, extraction="logprob") if fallback else s)
    return out


def explore_alignment_samples() -> list[Sample]:
    from dataclasses import replace

    out = []
    for setting in ("zero-shot", "rag"):
        for qid, answers in EXPLORE_ALIGNMENT.items():
            for s in make_samples(answers, qid=qid, gold=EXPLORE_GOLD[qid], setting=setting):
                hostile = (qid, s.lang, s.index) == ("q1", "zh", 1)
                out.append(replace(s, text=HOSTILE) if hostile else s)
    return out


def write_explore_run(folder: Path) -> Path:
    """The hand-made run as a run folder in the layout ``calm-rag run`` writes (metrics,
    votes and pairs computed by the library from the samples); no plots, no report."""
    from calm_rag.evaluation import evaluation_grid
    from calm_rag.io import write_json, write_jsonl
    from calm_rag.vote.pairs import build_pairs
    from calm_rag.vote.voting import VoteConfig, vote_all

    cells = {f"{split}/{phase}": explore_eval_samples(split, phase)
             for phase in ("before", "after") for split in EXPLORE_SPLITS}
    for name, samples in cells.items():
        write_samples(folder / "eval" / f"{name.replace('/', '-')}.jsonl", samples)
    write_json(folder / "metrics.json", evaluation_grid(cells))
    samples = explore_alignment_samples()
    votes = vote_all(samples, VoteConfig())
    write_samples(folder / "samples.jsonl", samples)
    write_jsonl(folder / "votes.jsonl", (v.to_dict() for v in votes))
    write_jsonl(folder / "pairs.jsonl",
                (p.to_dict() for p in build_pairs(samples, votes, VoteConfig())))
    write_jsonl(folder / "retrieved.jsonl", [
        {"question_id": qid, "lang": lang, "hits": [
            {"rank": 1, "score": 0.5, "lang": "en", "doc_id": f"doc-{qid}", "title": "T",
             "text": f"<img src=x onerror=alert(1)> passage for {qid} {lang}"}]}
        for qid in EXPLORE_GOLD for lang in ("en", "zh", "fr")])
    write_json(folder / "manifest.json", {"experiment": "tiny", "created": "2026-01-01",
                                          "questions": EXPLORE_SPLITS})
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "settings": ["zero-shot", "rag"], "data": {"languages": ["en", "zh", "fr"]},
        "vote": {"policy": "pooled", "tie": "first-seen", "weights": {}}}), encoding="utf-8")
    return folder


def local_trackers(monkeypatch: Any, folder: Path) -> None:
    """W&B offline, MLflow's file store and Trackio's local store, all under ``folder``: no
    account, no network, no telemetry, whatever the machine's environment says."""
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
                 "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (folder / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # mlflow.set_experiment keeps the experiment it chose, in a global and in
    # MLFLOW_EXPERIMENT_ID: forgotten now, and after the test (set first, so that it is undone).
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    if "mlflow" in sys.modules:
        monkeypatch.setattr(sys.modules["mlflow"].tracking.fluent, "_active_experiment_id", None)
    monkeypatch.setenv("TRACKIO_DIR", str(folder / "trackio"))
    for name, module in list(sys.modules.items()):  # trackio reads TRACKIO_DIR when imported
        if name.partition(".")[0] == "trackio" and hasattr(module, "TRACKIO_DIR"):
            monkeypatch.setattr(module, "TRACKIO_DIR", folder / "trackio")
    fresh_wandb_settings()


def fresh_wandb_settings() -> None:
    """wandb reads the environment once a process: forget what it read."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


ADAPTER_LANGUAGES = ("en", "zh", "fr")
"""The demo's languages that tests/test_adapters.py compares adapter and merged model in (three
scripts; README quotes the count)."""
