"""Sampling benchmark (not a test): prints figures and ratios; bench/README.md records them.

    python bench/sampling.py                      # ~25 min on 2 busy cores
    python bench/sampling.py --per-language 2 --repeat 1 --no-hf

On the same prompts (bundled questions, every language, the default generator) it prints:

* tokens/s of the ``vllm`` and ``hf`` backends (``sampler.generate`` on pre-built chats);
* calm_rag's sampling stage (``sample_questions``: prompts, one backend call, answer extraction)
  over the raw backend time (``sampler.generate`` on the same chats built beforehand), with the
  same parameters and seed, so both produce the same texts; aim <= 1.10;
* ``vllm`` through calm_rag (engine in a child process, chats rendered there, texts sent back)
  over vLLM's own ``LLM.generate`` in this process on the same token ids and request settings;
* tokens/s of the ``vllm`` backend with bfloat16 and with float32 weights on this machine, and
  which one ``dtype: auto`` picks here and why (calm_rag.runtime.hardware; CALM_RAG_BF16=0/1
  overrides).

The sides take turns in one loop, in reverse order every other turn (the machine is shared, so
load changes hit all sides alike); ratios are given for the summed times and for each side's
fastest run (the least disturbed one). vLLM's prefix cache is off on both vLLM sides: with it,
each run would find the prompts computed by the run before.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    args = parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the direct engine's; ours is quiet
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.sampling import SamplingParams, build_messages

    questions = pick(load_bundled(args.set), args.per_language)
    chats = [build_messages(q) for q in questions]
    params = SamplingParams(n=args.n, max_tokens=args.max_tokens, seed=0)
    print(f"{len(questions)} prompts ({args.set}, {args.per_language} per language) x "
          f"n={params.n}, max_tokens={params.max_tokens}, temperature={params.temperature}",
          flush=True)
    sides = build_sides(args, chats, params)
    times = run_turns(sides, questions, chats, params, args)
    results = report(times, args)
    if args.dtypes:
        results["dtypes"] = compare_dtypes(chats, params, args)
    for side in sides.values():
        getattr(side, "close", lambda: None)()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="commonsense", choices=("commonsense", "medical"))
    parser.add_argument("--per-language", type=int, default=4, help="questions per language")
    parser.add_argument("--n", type=int, default=3, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3, help="turns of the vllm sides")
    parser.add_argument("--hf-repeat", type=int, default=2, help="turns of the hf sides")
    parser.add_argument("--no-hf", dest="hf", action="store_false")
    parser.add_argument("--no-direct", dest="direct", action="store_false",
                        help="skip vLLM's own LLM.generate in this process")
    parser.add_argument("--no-dtypes", dest="dtypes", action="store_false",
                        help="skip the bfloat16 / float32 comparison")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args()


def pick(questions: list, per_language: int) -> list:
    """The first ``per_language`` questions of each language, languages in their order."""
    taken: dict[str, int] = {}
    out = []
    for q in questions:
        if taken.get(q.lang, 0) < per_language:
            taken[q.lang] = taken.get(q.lang, 0) + 1
            out.append(q)
    return out


class Direct:
    """vLLM's ``LLM.generate`` in this process, with the requests calm_rag's child sends."""

    def __init__(self, chats: list, model: str, options) -> None:
        import vllm
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        from calm_rag.sampling.vllm_backend import EngineConfig, engine_args, one_process_on_cpu

        config = EngineConfig.of(model, options)
        if current_platform.is_cpu():
            one_process_on_cpu()  # the layout calm_rag's child uses
        self.llm = vllm.LLM(**engine_args(config, on_cpu=current_platform.is_cpu()))
        tokenizer = AutoTokenizer.from_pretrained(model)
        self.ids = [list(tokenizer.apply_chat_template(
            chat, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
            for chat in chats]
        self.last_stats: dict = {}

    def generate(self, params) -> list[list[str]]:
        from vllm.inputs import TokensPrompt

        from calm_rag.sampling.vllm_backend import request_params

        started = time.perf_counter()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in self.ids],
                                    [request_params(params, p) for p in self.ids],
                                    use_tqdm=False)
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
        self.last_stats = {"new_tokens": tokens, "seconds": seconds}
        return [[c.text for c in out.outputs] for out in outputs]

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


def build_sides(args: argparse.Namespace, chats: list, params) -> dict:
    from calm_rag.sampling import HFOptions, HFSampler, VLLMOptions, VLLMSampler

    sides: dict = {}
    started = time.perf_counter()
    # No prefix caching: each run would find the prompts the run before it computed.
    options = VLLMOptions(enable_prefix_caching=False, progress=False)
    sides["vllm"] = VLLMSampler(options=options)
    sides["vllm"].generate(chats[:1], type(params)(n=1, max_tokens=1))  # starts the engine
    print(f"vllm: engine (child process) ready in {time.perf_counter() - started:.1f} s",
          flush=True)
    if args.direct:
        started = time.perf_counter()
        sides["direct"] = Direct(chats, sides["vllm"].model_path, options)
        print(f"direct vLLM: engine ready in {time.perf_counter() - started:.1f} s", flush=True)
    if args.hf:
        sides["hf"] = HFSampler(options=HFOptions(progress=False))
    return sides


def run_turns(sides: dict, questions: list, chats: list, params,
              args: argparse.Namespace) -> dict[str, dict]:
    """Each side in turn, ``repeat`` times; seconds and new tokens summed per side."""
    from calm_rag.sampling import sample_questions

    timed = {name: Timed(sides[name]) for name in ("vllm", "hf") if name in sides}
    runs = {"vllm raw": lambda: sides["vllm"].generate(chats, params),
            "vllm stage": lambda: sample_questions(questions, timed["vllm"], params)}
    if "direct" in sides:
        runs["direct vLLM"] = lambda: sides["direct"].generate(params)
    if "hf" in sides:
        runs["hf raw"] = lambda: sides["hf"].generate(chats, params)
        runs["hf stage"] = lambda: sample_questions(questions, timed["hf"], params)
    times = {name: {"seconds": 0.0, "new_tokens": 0, "runs": [], "texts": None}
             for name in runs}
    for turn in range(max(args.repeat, args.hf_repeat if "hf" in sides else 0)):
        order = list(runs.items())
        for name, run in order if turn % 2 == 0 else order[::-1]:  # no side always goes first
            if turn >= (args.hf_repeat if name.startswith("hf") else args.repeat):
                continue
            started = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - started
            side = sides[name.split()[0]]
            texts = [s.text for s in out] if name.endswith("stage") else [
                t for group in out for t in group]
            times[name]["seconds"] += seconds
            times[name]["runs"].append(seconds)
            times[name]["new_tokens"] += side.last_stats["new_tokens"]
            times[name]["texts"] = times[name]["texts"] or texts
            print(f"  turn {turn + 1}: {name:<12} {seconds:7.1f} s  "
                  f"{side.last_stats['new_tokens'] / seconds:6.1f} tok/s   "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    for name, wrapper in timed.items():
        times[f"{name} stage"]["in_backend"] = wrapper.seconds
    return times


class Timed:
    """Passes ``generate`` on to a sampler and adds up the time spent in it: what the stage
    spends around the backend call is its own work."""

    def __init__(self, sampler) -> None:
        self.sampler, self.seconds = sampler, 0.0

    def generate(self, prompts: list, params) -> list[list[str]]:
        started = time.perf_counter()
        try:
            return self.sampler.generate(prompts, params)
        finally:
            self.seconds += time.perf_counter() - started


def report(times: dict[str, dict], args: argparse.Namespace) -> dict:
    print()
    results: dict = {"args": vars(args), "sides": {}}
    for name, t in times.items():
        rate = t["new_tokens"] / t["seconds"]
        results["sides"][name] = {"seconds": round(t["seconds"], 2),
                                  "runs_s": [round(x, 2) for x in t["runs"]],
                                  "new_tokens": t["new_tokens"], "tokens_per_s": round(rate, 1)}
        print(f"{name:<12} {len(t['runs'])} runs {t['seconds']:8.1f} s  (best {min(t['runs']):6.1f}"
              f" s)  {t['new_tokens']:6d} new tokens  {rate:6.1f} tok/s")
    pairs = [("vllm stage", "vllm raw", 1.10), ("hf stage", "hf raw", 1.10),
             ("vllm raw", "direct vLLM", None)]
    for ours, base, aim in pairs:
        if ours in times and base in times:
            ratio = times[ours]["seconds"] / times[base]["seconds"]
            best = min(times[ours]["runs"]) / min(times[base]["runs"])
            same = times[ours]["texts"] == times[base]["texts"]
            verdict = "" if aim is None else (
                f"  (aim <= {aim}: {'ok' if ratio <= aim else 'ABOVE'})")
            print(f"{ours} / {base}: {ratio:.3f} summed{verdict}, {best:.3f} best of each   "
                  f"same texts: {same}")
            results[f"{ours} / {base}"] = {"ratio": round(ratio, 3), "best_ratio": round(best, 3),
                                           "same_texts": same}
    for name, t in times.items():
        if "in_backend" in t:  # the same runs, measured from inside: no load noise between them
            own = t["seconds"] - t["in_backend"]
            print(f"{name}: {own * 1000 / len(t['runs']):.0f} ms of its own work per run around "
                  f"the backend call; stage / backend call {t['seconds'] / t['in_backend']:.4f}")
            results[f"{name} / its backend call"] = round(t["seconds"] / t["in_backend"], 4)
    if "vllm raw" in times and "hf raw" in times:
        speedup = (times["vllm raw"]["new_tokens"] / times["vllm raw"]["seconds"]) / (
            times["hf raw"]["new_tokens"] / times["hf raw"]["seconds"])
        print(f"vllm / hf tokens/s: {speedup:.2f}x")
        results["vllm / hf tokens_per_s"] = round(speedup, 2)
    return results


def compare_dtypes(chats: list, params, args: argparse.Namespace) -> dict:
    """tokens/s of the vllm backend in bfloat16 and in float32, turn about, and ``auto``'s pick."""
    from calm_rag.runtime.hardware import auto_precision
    from calm_rag.sampling import VLLMOptions, VLLMSampler

    chosen = auto_precision()
    print(f"\ndtype: auto picks {chosen.dtype} here ({chosen.reason})", flush=True)
    samplers = {}
    for dtype in ("bfloat16", "float32"):
        started = time.perf_counter()
        samplers[dtype] = VLLMSampler(options=VLLMOptions(dtype=dtype, enable_prefix_caching=False,
                                                          progress=False))
        samplers[dtype].generate(chats[:1], type(params)(n=1, max_tokens=1))  # the engine
        print(f"vllm {dtype}: engine ready in {time.perf_counter() - started:.1f} s", flush=True)
    totals = {dtype: [0.0, 0] for dtype in samplers}
    for turn in range(args.repeat):
        order = list(samplers) if turn % 2 == 0 else list(samplers)[::-1]
        for dtype in order:
            started = time.perf_counter()
            samplers[dtype].generate(chats, params)
            seconds, tokens = time.perf_counter() - started, samplers[dtype].last_stats[
                "new_tokens"]
            totals[dtype][0] += seconds
            totals[dtype][1] += tokens
            print(f"  turn {turn + 1}: vllm {dtype:<8} {seconds:7.1f} s  {tokens / seconds:6.1f}"
                  f" tok/s   (load average {os.getloadavg()[0]:.1f})", flush=True)
    for sampler in samplers.values():
        sampler.close()
    rates = {dtype: tokens / seconds for dtype, (seconds, tokens) in totals.items()}
    for dtype, rate in rates.items():
        print(f"vllm {dtype:<8} {rate:6.1f} tok/s{'   <- auto' if dtype == chosen.dtype else ''}")
    print(f"bfloat16 / float32 tokens/s: {rates['bfloat16'] / rates['float32']:.2f}x")
    return {"auto": chosen.to_dict(), "tokens_per_s": {d: round(r, 1) for d, r in rates.items()}}


if __name__ == "__main__":  # the vLLM engine's processes are spawned: they re-import this file
    main()
