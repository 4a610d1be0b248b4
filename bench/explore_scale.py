"""The explorer of a large run: a synthetic run folder of N questions × L languages (default
10,000 × 6) in the layout ``calm-rag run`` writes, its ``explore.html`` size and build time,
and how long headless Chromium takes to open it and show the first question.

The run is synthetic (answers drawn at random with a fixed seed, texts ~150 characters, one
retrieved passage per question and language, two alignment samples per language for the
train half); metrics.json, votes and pairs are computed by the library from those samples.

    python bench/explore_scale.py                       # 10,000 × 6, writes the result table
    python bench/explore_scale.py --questions 500 --no-write
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LANGS = ["en", "zh", "fr", "de", "it", "ja"]
LETTERS = "ABCD"
OUT = REPO / "bench" / "results" / "explore_scale.md"


def samples(qids: list[str], langs: list[str], setting: str, n: int, rng: random.Random,
            gold: dict[str, str]) -> list:
    from calm_rag.records import Question, Sample

    out = []
    for qid in qids:
        for lang in langs:
            question = Question(id=qid, lang=lang, stem=f"{qid} stem in {lang}: " + "x" * 80,
                                options={x: f"option {x} in {lang}" for x in LETTERS},
                                answer=gold[qid])
            for index in range(n):
                answer = gold[qid] if rng.random() < 0.6 else rng.choice(LETTERS)
                out.append(Sample(question=question, setting=setting, index=index,
                                  text=f"Explanation: {'y' * 120}\nAnswer: {answer}",
                                  answer=answer, extraction="marker_letter",
                                  instruction="i", input="q"))
    return out


def write_run(folder: Path, questions: int, langs: list[str]) -> None:
    """The synthetic run folder; half the questions train, half held out."""
    from calm_rag.datasets.samples import write_samples
    from calm_rag.evaluation import evaluation_grid
    from calm_rag.io import write_json, write_jsonl
    from calm_rag.vote.pairs import build_pairs
    from calm_rag.vote.voting import VoteConfig, vote_all

    rng = random.Random(0)
    qids = [f"q{i:05d}" for i in range(questions)]
    gold = {q: rng.choice(LETTERS) for q in qids}
    splits = {"train": qids[: questions // 2], "heldout": qids[questions // 2:]}
    cells = {f"{split}/{phase}": [s for setting in ("zero-shot", "rag")
                                  for s in samples(ids, langs, setting, 1, rng, gold)]
             for phase in ("before", "after") for split, ids in splits.items()}
    for name, cell in cells.items():
        write_samples(folder / "eval" / f"{name.replace('/', '-')}.jsonl", cell)
    write_json(folder / "metrics.json", evaluation_grid(cells))
    aligned = [s for setting in ("zero-shot", "rag")
               for s in samples(splits["train"], langs, setting, 2, rng, gold)]
    votes = vote_all(aligned, VoteConfig())
    write_samples(folder / "samples.jsonl", aligned)
    write_jsonl(folder / "votes.jsonl", (v.to_dict() for v in votes))
    write_jsonl(folder / "pairs.jsonl",
                (p.to_dict() for p in build_pairs(aligned, votes, VoteConfig())))
    write_jsonl(folder / "retrieved.jsonl", [
        {"question_id": q, "lang": lang, "hits": [{"rank": 1, "score": 0.5, "lang": "en",
                                                   "doc_id": f"d-{q}", "title": "t",
                                                   "text": "passage " + "z" * 200}]}
        for q in qids for lang in langs])
    write_json(folder / "manifest.json", {"experiment": "scale", "questions": splits})


def open_time(page_path: Path) -> tuple[float, float]:
    """Seconds until the questions table shows, then until the first question is drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox"])
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_selector("#rows tr")
        listed = time.perf_counter() - started
        page.click("#rows tr:first-child")
        page.wait_for_selector("#q-title")
        shown = time.perf_counter() - started
        browser.close()
    return listed, shown


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(sorted(set(re.findall(r"\b(" + "|".join(wanted) + r")\b", text)))) or "none"


def main() -> int:
    from calm_rag.explore import write_explorer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10_000)
    parser.add_argument("--languages", type=int, default=6)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scale" / "run"
        started = time.perf_counter()
        write_run(folder, args.questions, LANGS[: args.languages])
        made = time.perf_counter() - started
        started = time.perf_counter()
        page = write_explorer(folder)
        built = time.perf_counter() - started
        listed, shown = open_time(page)
        size = page.stat().st_size
    row = (f"| {args.questions:,} × {args.languages} | {size / 2**20:.1f} MiB | {built:.1f} s "
           f"| {listed:.2f} s | {shown:.2f} s |")
    table = ("| run | explore.html | build | open: table shown | open: first question shown |\n"
             "|---|---|---|---|---|\n" + row)
    print(f"synthetic run written in {made:.0f} s\n{table}")
    if not args.no_write:
        OUT.write_text(
            "# The explorer of a large run\n\n`python bench/explore_scale.py`: a synthetic run "
            "(see the script), its `explore.html` built by `calm-rag explore`'s code and opened "
            "in headless Chromium (Debian's chromium through playwright); times from "
            "`page.goto` until the questions table shows and until the first question's "
            "detail is drawn after a click.\n\n"
            f"{table}\n\nCPU: {platform.processor() or platform.machine()}, flags: "
            f"{cpu_flags()}; {Path('/proc/cpuinfo').read_text().count('processor')} cores "
            "shared with other work.\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
