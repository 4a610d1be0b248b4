"""`make demo`'s report, and whether two fresh runs of it agree file for file.

Runs `calm-rag run pipelines/demo.yaml` twice, each into its own empty runs folder (so each
computes every stage: no stage cache is shared; the prepared models and the built index are),
then compares what the two run folders hold: samples, votes, pairs, retrieved passages, the
evaluation's samples, the adapter's weights and metrics.json. A file that differs is counted by
lines, and the results file says so: the figures below it then hold for one run only. Then,
on the first run's cache, the fusion calm_rag used before the z-score fusion (reciprocal rank
at 60 over 20 candidates a list), for the report's retrieval delta beside this version's.

Writes bench/results/demo.md: the first run's report header, results and paired changes, the
comparison, and the fusion's rows (README's demo table and its sentences quote this file).

    python bench/demo_repeat.py            # three demo runs, ~6-10 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results_header import REPO, commit, header, load_average, write_results

OUT = REPO / "bench" / "results" / "demo.md"
COMMAND = "python bench/demo_repeat.py"
DEMO = [sys.executable, "-m", "calm_rag.cli", "run", "pipelines/demo.yaml"]
RRF60 = ("--set", "name=demo-rrf60", "--set", "retrieval.fusion.combine=rrf",
         "--set", "retrieval.fusion.depth=20", "--set", "retrieval.fusion.rrf_k=60")
# What a run folder holds that the two runs must agree on (the manifest and the report name
# their own folders and times, and are left out).
COMPARED = ("samples.jsonl", "votes.jsonl", "pairs.jsonl", "retrieved.jsonl", "metrics.json",
            "eval/train-before.jsonl", "eval/heldout-before.jsonl", "eval/train-after.jsonl",
            "eval/heldout-after.jsonl", "adapter/adapter_model.safetensors")
REPORT_SECTIONS = ("## Results", "## Consistency before → after")


def run_demo(runs: Path, name: str = "demo", extra: tuple[str, ...] = ()) -> Path:
    """One demo run named ``name`` into ``runs``; its run folder."""
    subprocess.run([*DEMO, "--set", f"runs_dir={runs}", *extra], cwd=REPO, check=True,
                   env=os.environ | {"PYTHONPATH": str(REPO)})
    return sorted(p for p in (runs / name).glob("2*") if (p / "report.md").is_file())[-1]


def differing_lines(first: Path, second: Path) -> str:
    """``identical``, or how many lines (or bytes, for weights) differ."""
    a, b = first.read_bytes(), second.read_bytes()
    if a == b:
        return "identical"
    if first.suffix == ".safetensors":
        return f"different ({len(a)} and {len(b)} bytes)"
    ours, theirs = a.splitlines(), b.splitlines()
    changed = (sum(x != y for x, y in zip(ours, theirs, strict=False))
               + abs(len(ours) - len(theirs)))
    return f"{changed} of {max(len(ours), len(theirs))} lines differ"


def comparison(first: Path, second: Path) -> list[str]:
    rows = ["| file | two fresh runs |", "|---|---|"]
    for name in COMPARED:
        rows.append(f"| `{name}` | {differing_lines(first / name, second / name)} |")
    return rows


def sections(report: Path, wanted: tuple[str, ...]) -> list[str]:
    """The report's header (up to its first section) and the ``wanted`` sections, as written."""
    lines, keep, out = report.read_text(encoding="utf-8").splitlines(), True, []
    for line in lines[1:]:
        if line.startswith("## "):
            keep = line in wanted
        if keep:
            out.append(line)
    return out


def delta_rows(report: Path, label: str) -> list[str]:
    """The retrieval delta's ``all`` rows, labelled with the fusion."""
    rows = []
    for line in sections(report, ("## Retrieval delta",)):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 2 and cells[1] == "all":
            rows.append("| " + " | ".join([cells[0], label, *cells[2:]]) + " |")
    return rows


def recall_line(report: Path) -> str:
    return next(line for line in report.read_text(encoding="utf-8").splitlines()
                if "retrieval recall@" in line)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    started, revision = load_average(), commit()
    with tempfile.TemporaryDirectory(prefix="demo-repeat-") as work:
        first, second = (run_demo(Path(work) / name) for name in ("a", "b"))
        rrf = run_demo(Path(work) / "a", "demo-rrf60", RRF60)  # the first run's cache: same samples
        agree = all(differing_lines(first / n, second / n) == "identical" for n in COMPARED)
        lines = header("make demo's report, and two fresh runs compared", COMMAND, started,
                       revision)
        lines += [f"`calm-rag run pipelines/demo.yaml` into two empty runs folders (every stage "
                  f"computed twice; the prepared models and the index shared): "
                  f"{'every file below identical' if agree else 'THE RUNS DIFFER'}.", "",
                  *comparison(first, second), "",
                  "The first run's report header and results, as written:", "",
                  *sections(first / "report.md", REPORT_SECTIONS), "",
                  "## The fusion before (same cache)", "",
                  f"`calm-rag run pipelines/demo.yaml {' '.join(RRF60)}` on the first run's "
                  "cache (reciprocal-rank fusion at 60 over 20 candidates a list: what calm_rag "
                  "did before the z-score fusion); its recall line and the retrieval delta's "
                  "`all` rows, beside this version's:", "",
                  f"- before: {recall_line(rrf / 'report.md').lstrip('- ')}",
                  f"- now: {recall_line(first / 'report.md').lstrip('- ')}", "",
                  "| cell | fusion | compared | helped | hurt | changed | unchanged | net |",
                  "|---|---|---|---|---|---|---|---|",
                  *sorted(delta_rows(rrf / "report.md", "rrf60 (before)")
                          + delta_rows(first / "report.md", "zscore (now)"),
                          key=lambda row: CELL_ORDER.index(row.split("|")[1].strip()))]
    write_results(OUT, lines)
    return 0 if agree else 1


CELL_ORDER = ["train/before", "heldout/before", "train/after", "heldout/after"]

if __name__ == "__main__":
    sys.exit(main())
