"""`make demo` timed as a new user meets it: a fresh clone, an empty CALM_RAG_HOME, no runs
and no built index, once with `auto` precision and once with `CALM_RAG_BF16=0`, each followed
by the same command again (answered from the stage cache).

Each precision gets its own clone of this checkout's HEAD and its own empty CALM_RAG_HOME; the
command is what `make demo` runs after its set-up, `calm-rag run pipelines/demo.yaml`, with the
running interpreter's environment (so the venv is reused: no pip install is timed) and the
clone first on PYTHONPATH (its code runs, not the venv's). The wall time is measured here; the
parts come from what the run records itself: the generator's and the index's preparation times
(their stamp and manifest) and each stage's seconds in the run's manifest.json.

    python bench/demo_timing.py                     # both precisions, ~10-15 min on 2 cores
    python bench/demo_timing.py --precision auto --no-write --keep /tmp/demo-timing
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from results_header import REPO, commit, header, load_average, write_results

OUT = REPO / "bench" / "results" / "demo_timing.md"
COMMAND = "python bench/demo_timing.py"
DEMO = ("run", "pipelines/demo.yaml")
# The precisions timed: label in the table, CALM_RAG_BF16 (None: unset, `auto` decides).
PRECISIONS = {"auto": ("`auto`", None), "float32": ("float32 (`CALM_RAG_BF16=0`)", "0")}
ROUND = re.compile(r"r\d+/")  # a round's sampling stage ("r1/train/rag"), not an evaluation
TIMEOUT_S = 3600  # one run; far above the ~5 min a demo takes on 2 cores


@dataclass(frozen=True)
class Timed:
    """One run of the demo command: its wall time, the load when it started, its folder."""

    seconds: float
    load: float
    folder: Path


def fresh_clone(work: Path) -> Path:
    """A clone of this checkout's HEAD: nothing built, no runs, no .venv."""
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
                   check=True)
    return clone


def environment(clone: Path, home: Path, bf16: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CALM_RAG_BF16", "PYTHONPATH")}
    env.update(PYTHONPATH=str(clone), CALM_RAG_HOME=str(home))
    if bf16 is not None:
        env["CALM_RAG_BF16"] = bf16
    return env


def run_demo(clone: Path, env: dict[str, str], log: Path) -> Timed:
    """``calm-rag run pipelines/demo.yaml`` in ``clone``, its output in ``log``."""
    calm_rag = Path(sys.executable).with_name("calm-rag")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run([str(calm_rag), *DEMO], cwd=clone, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT_S, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the demo failed (exit {done.returncode}); its output: {log}")
    latest = (clone / "runs" / "demo" / "LATEST").read_text(encoding="utf-8").strip()
    return Timed(seconds, load, clone / "runs" / "demo" / latest)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def stage_seconds(stages: list[dict]) -> dict[str, float]:
    """The run's stages summed by phase: the index query (retrieve), round 1's sampling, the
    answers fallback, DPO and the two evaluations (a phase's first stage starts its engine)."""
    def total(keep) -> float:
        return sum(s["seconds"] for s in stages if keep(s))

    return {"retrieve": total(lambda s: s["stage"] == "retrieve"),
            "sampling": total(lambda s: s["stage"] == "sample" and ROUND.match(s["label"])),
            "before-eval": total(lambda s: s["stage"] == "sample" and "/before/" in s["label"]),
            "answers": total(lambda s: s["stage"] == "answers"),
            "DPO": total(lambda s: s["stage"] == "align"),
            "after-eval": total(lambda s: s["stage"] == "sample" and "/after/" in s["label"])}


def checked_manifest(timed: Timed, clone: Path, bf16: str | None) -> dict:
    """The run's manifest, refused unless the clone's code ran at the precision asked for."""
    manifest = read_json(timed.folder / "manifest.json")
    ran = manifest.get("git", {}).get("commit")
    if ran is None or not commit(clone).startswith(ran):
        sys.exit(f"{timed.folder}: made at commit {ran}, not the clone's: the venv's own "
                 "calm_rag ran")
    dtype = manifest["precision"]["generator"]
    if bf16 == "0" and dtype != "float32":
        sys.exit(f"{timed.folder}: CALM_RAG_BF16=0 but the generator ran in {dtype}")
    return manifest


def prepared(run: Path, clone: Path, home: Path) -> dict[str, float]:
    """The seconds the generator's conversion (its stamp) and the index build (its manifest)
    took, both refused unless they were made in this clone's fresh CALM_RAG_HOME."""
    from calm_rag.models.home import STAMP_FILE
    from calm_rag.runs import open_run

    base = Path(read_json(run / "manifest.json")["paths"]["base_model"])
    if not base.is_relative_to(home):
        sys.exit(f"{run}: the generator {base} is not in the fresh CALM_RAG_HOME {home}")
    retrieval = open_run(run).config.retrieval
    index = clone / retrieval.index_dir / retrieval.index / "manifest.json"
    return {"generator prepared": read_json(base / STAMP_FILE)["seconds"],
            "index built": read_json(index)["build_seconds"]}


def measure(name: str, work: Path) -> dict:
    """Both runs of one precision in a clone and CALM_RAG_HOME of its own, and their parts."""
    label, bf16 = PRECISIONS[name]
    folder = work / name
    folder.mkdir(parents=True)
    clone, home = fresh_clone(folder), folder / "calm_rag_home"
    env = environment(clone, home, bf16)
    first = run_demo(clone, env, folder / "first.log")
    manifest = checked_manifest(first, clone, bf16)
    again = run_demo(clone, env, folder / "rerun.log")
    stages = checked_manifest(again, clone, bf16)["stages"]
    parts = {**prepared(first.folder, clone, home), **stage_seconds(manifest["stages"])}
    return {"label": f"{label}: {manifest['precision']['generator']}", "wall": first.seconds,
            "load": first.load, "parts": parts, "rerun": again.seconds,
            "rerun_cached": (sum(s["cached"] for s in stages), len(stages)),
            "reason": manifest["precision"]["reason"]}


def table(rows: list[dict]) -> list[str]:
    parts = list(rows[0]["parts"])
    lines = ["| demo, fresh clone | load at start | wall | " + " | ".join(parts)
             + " | rest | rerun (stages cached) |", "|---" * (len(parts) + 5) + "|"]
    for row in rows:
        rest = row["wall"] - sum(row["parts"].values())
        cached, stages = row["rerun_cached"]
        lines.append(f"| {row['label']} | {row['load']:.2f} | {row['wall']:.1f} s | "
                     + " | ".join(f"{row['parts'][p]:.1f} s" for p in parts)
                     + f" | {rest:.1f} s | {row['rerun']:.1f} s ({cached} of {stages}) |")
    return lines


def ratios(rows: list[dict]) -> list[str]:
    """float32 over bf16, for the wall time and each part (what a CPU without bf16 pays)."""
    if len(rows) != 2:
        return []
    fast, slow = rows
    pairs = [("wall", fast["wall"], slow["wall"])] + [
        (part, fast["parts"][part], slow["parts"][part]) for part in fast["parts"]
        if fast["parts"][part] >= 1.0]
    return ["Ratios, float32 over `auto`: " + ", ".join(
        f"{name} {b / a:.2f}x" for name, a, b in pairs) + "."]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=[*PRECISIONS, "both"], default="both")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it: the "
                        "clones, their CALM_RAG_HOME, runs and logs")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    names = list(PRECISIONS) if args.precision == "both" else [args.precision]
    started_load, revision = load_average(), commit()  # what the clones check out
    with tempfile.TemporaryDirectory(prefix="demo-timing-") as tmp:
        work = args.keep or Path(tmp)
        rows = [measure(name, work) for name in names]
    text = [*header("`make demo` from a fresh clone", COMMAND, started_load, revision),
            *about(rows), "", *table(rows), "", *ratios(rows)]
    if args.no_write:
        print("\n".join(text))
    else:
        write_results(args.out, text)
    return 0


def about(rows: list[dict]) -> list[str]:
    return [
        "Each precision: a `git clone` of the commit above, an empty `CALM_RAG_HOME`, no runs "
        "and no built index; `calm-rag run pipelines/demo.yaml` (what `make demo` runs after "
        "its set-up) timed from the outside, then run again in the same clone (the rerun, "
        "answered from the stage cache). The venv running this script was reused, so no "
        "`pip install` is timed (`make demo`'s set-up is not). `auto` chose "
        f"{rows[0]['label'].split(': ')[-1]} here ({rows[0]['reason']}).", "",
        "The parts are what the run records: the generator's conversion (its stamp in "
        "`CALM_RAG_HOME`), the index build (its manifest; the embedder's conversion is inside "
        "it), and the stages of the run's manifest.json summed by phase (the first sampling "
        "stage of a phase starts its vLLM engine; `answers` is the log-prob fallback). "
        "`rest`: the wall time less the parts (imports, engine stops, votes, the report)."]


if __name__ == "__main__":
    sys.exit(main())
