"""Data-parallel sampling benchmark (not a test): one vLLM engine, then ``--engines`` engines
as child processes, then as actors on a local Ray cluster, on the same prompts; prints each
layout's start and sampling times, tokens/s, and whether its texts equal one engine's byte for
byte.

    python bench/data_parallel.py                          # ~5 min on 2 busy cores
    python bench/data_parallel.py --engines 4 --per-language 8 --no-ray
    python bench/data_parallel.py --ray-address auto       # a cluster started by `ray start`

On a CPU machine the engines share its cores (each gets an equal share), so more engines do
not sample faster there: the point of the CPU run is the identity. On a GPU node each engine
takes tensor_parallel_size x pipeline_parallel_size GPUs of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    args = parse_args()
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.sampling import SamplingParams, build_messages

    per_language: dict[str, int] = {}
    chats = []
    for q in load_bundled(args.set):  # the first questions of each language
        if per_language.setdefault(q.lang, 0) < args.per_language:
            per_language[q.lang] += 1
            chats.append(build_messages(q))
    params = SamplingParams(n=args.n, temperature=0.8, max_tokens=args.max_tokens, seed=0)
    print(f"{len(chats)} prompts x n={params.n}, max_tokens={params.max_tokens}; "
          f"{os.cpu_count()} cores", flush=True)
    layouts = [("1 engine", {})]
    layouts.append((f"{args.engines} engines (processes)", {"data_parallel_size": args.engines}))
    if args.ray:
        layouts.append((f"{args.engines} engines (Ray actors)",
                        {"data_parallel_size": args.engines, "ray_address": args.ray_address}))
    results, reference = {}, None
    for name, options in layouts:
        figures, texts = run_layout(chats, params, args, options)
        reference = reference if reference is not None else texts
        figures["identical_to_one_engine"] = texts == reference
        results[name] = figures
        print(f"{name:28s} start {figures['start_s']:6.1f} s   sample {figures['sample_s']:6.1f} s"
              f"   {figures['tokens_per_s']:6.0f} tok/s   identical: "
              f"{figures['identical_to_one_engine']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def run_layout(chats: list, params, args: argparse.Namespace, options: dict
               ) -> tuple[dict, list]:
    """Start the layout's engines, sample once, stop them: the figures and the texts."""
    from calm_rag.sampling import VLLMOptions, VLLMSampler

    temp = None
    if options.get("ray_address") == "local":
        import ray

        temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # sockets need a short path
        ray.init(address="local", include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        sampler = VLLMSampler(options=VLLMOptions(max_model_len=args.max_model_len,
                                                  kv_cache_gib=args.kv_cache_gib,
                                                  progress=False, **options))
        started = time.perf_counter()
        sampler.generate(chats[:1], params)  # starts the engines
        start_s = time.perf_counter() - started
        started = time.perf_counter()
        texts = sampler.generate(chats, params)
        sample_s = time.perf_counter() - started
        stats = dict(sampler.last_stats)
        sampler.close()
    finally:
        if temp is not None:
            import ray

            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    return {"start_s": start_s, "sample_s": sample_s, "new_tokens": stats["new_tokens"],
            "tokens_per_s": stats["new_tokens"] / sample_s}, texts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="commonsense", choices=("commonsense", "medical"))
    parser.add_argument("--per-language", type=int, default=4, help="questions per language")
    parser.add_argument("--n", type=int, default=3, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--engines", type=int, default=2, help="data_parallel_size")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--kv-cache-gib", type=float, default=0.5, help="per engine, CPU only")
    parser.add_argument("--no-ray", dest="ray", action="store_false")
    parser.add_argument("--ray-address", default="local",
                        help="local: a cluster of this machine, started and stopped here")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args()


if __name__ == "__main__":
    main()
