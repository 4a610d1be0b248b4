"""The GPU check of issue 12: one script a GPU machine runs as it is.

    python bench/gpu_check.py               # on a GPU machine: the full check (minutes)
    python bench/gpu_check.py --dry-run     # anywhere: the configuration checks only

It runs the demo-sized experiment (``pipelines/demo.yaml``) on vLLM (tensor parallel over 2
GPUs when two are visible), trains its DPO round under ``accelerate launch`` (2 processes when
there are 2 GPUs), evaluates the adapter unmerged (``align.merge`` is off), and searches a FAISS
index on the GPU. It prints tokens/s of the sampling stages, every stage's time from the run's
manifest, and the report's path. Without a GPU it says so, runs the dry-run checks and exits 0.
A fresh runs folder (a temporary one unless ``--runs-dir``) keeps the cache from answering.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "pipelines" / "demo.yaml"


def main() -> int:
    args = parse_args()
    gpus = gpu_count()
    print(f"GPUs visible: {gpus}")
    overrides = demo_overrides(gpus)
    dry_run(overrides)
    if args.dry_run or gpus == 0:
        print("no GPU: the GPU checks were not run" if gpus == 0 else "dry run: done")
        return 0
    faiss_on_gpu()
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="calm-gpu-check-"))
    command = [sys.executable, "-m", "calm_rag.cli", "run", str(EXPERIMENT), "--quiet",
               "--runs-dir", str(runs), *[f"--set={o}" for o in overrides]]
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    code = subprocess.call(command, cwd=ROOT)
    print(f"demo run: exit {code} after {time.perf_counter() - started:.0f} s")
    if code != 0:
        return code
    summarize(runs, "demo")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="check the configuration and the installed engines only")
    parser.add_argument("--runs-dir", help="where the run and its cache go (default: a new "
                        "temporary folder)")
    return parser.parse_args()


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def demo_overrides(gpus: int) -> list[str]:
    """The demo on vLLM with TP over two GPUs, and DPO under accelerate, one rank a GPU."""
    sets = ["generator.backend=vllm", "align.launcher=accelerate",
            f"align.num_processes={max(1, min(gpus, 2))}", "align.report_to=tensorboard",
            "align.save_steps=4"]
    if gpus >= 2:
        sets.append("generator.options.tensor_parallel_size=2")
    return sets


def dry_run(overrides: list[str]) -> None:
    """What needs no GPU: the experiment with the overrides loads, the engines import, and the
    launcher's command line is built."""
    from calm_rag.experiment import load_experiment
    from calm_rag.training.launch import launch_command

    experiment = load_experiment(EXPERIMENT, overrides)
    print("experiment with the overrides: ok (" + ", ".join(overrides) + ")")
    print("launcher:", " ".join(launch_command(experiment.align, Path("STAGING"))[1:]))
    for module in ("vllm", "accelerate", "trl", "peft", "faiss", "deepspeed"):
        try:
            __import__(module)
            version = getattr(sys.modules[module], "__version__", "?")
            print(f"  {module}: {version}")
        except ImportError as err:
            print(f"  {module}: not importable ({err})")


def faiss_on_gpu() -> None:
    """A flat inner-product index on the GPU returns what the CPU index returns."""
    try:
        import faiss
        import numpy as np
    except ImportError as err:
        print(f"FAISS on the GPU: skipped ({err})")
        return
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        print("FAISS on the GPU: skipped (this faiss build has no GPU support)")
        return
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200_000, 384), dtype=np.float32)
    queries = rng.standard_normal((1_000, 384), dtype=np.float32)
    cpu = faiss.IndexFlatIP(384)
    cpu.add(vectors)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    started = time.perf_counter()
    _, on_gpu = gpu.search(queries, 10)
    seconds = time.perf_counter() - started
    _, on_cpu = cpu.search(queries, 10)
    same = float((on_gpu[:, 0] == on_cpu[:, 0]).mean())
    print(f"FAISS on the GPU: 1000 queries x 200k vectors in {seconds * 1000:.0f} ms, "
          f"top-1 equal to the CPU's for {same:.1%}")


def summarize(runs: Path, name: str) -> None:
    """Tokens/s of the sampling stages, every stage's time, and where the report is."""
    folder = runs / name / (runs / name / "LATEST").read_text(encoding="utf-8").strip()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    stages = manifest["stages"]
    print(f"{'stage':<9} {'label':<30} {'seconds':>8}")
    for stage in stages:
        how = "cached" if stage["cached"] else f"{stage['seconds']:8.1f}"
        print(f"{stage['stage']:<9} {stage['label']:<30} {how:>8}")
    sampled = sum(s["seconds"] for s in stages if s["stage"] == "sample" and not s["cached"])
    tokens = count_tokens(folder, manifest["models"]["base"])
    if sampled and tokens:
        print(f"sampling: {tokens} tokens in {sampled:.1f} s = {tokens / sampled:.0f} tokens/s "
              "(the sample stages' wall time: prompts, engine and extraction)")
    for stage in (s for s in stages if s["stage"] == "align"):
        log = json.loads((runs / ".cache" / "align" / stage["key"] / "train_log.json")
                         .read_text(encoding="utf-8"))
        print(f"DPO: {log.get('processes')} processes ({log.get('backend')}), "
              f"{log['seconds']} s, final loss {log['steps'][-1]['loss']:.4f}")
    print(f"final model: {manifest['models']['final']} ({manifest['models']['final_fingerprint']})")
    print(f"report: {folder / 'report.md'}")


def count_tokens(folder: Path, model: str) -> int:
    """Generated tokens of every sample the run wrote (training rounds and evaluation)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    total = 0
    for path in [*folder.glob("**/samples.jsonl"), *folder.glob("eval/*.jsonl")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                total += len(tokenizer(json.loads(line)["text"])["input_ids"])
    return total


if __name__ == "__main__":
    sys.exit(main())
