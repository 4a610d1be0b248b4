"""Log-prob fallback benchmark (not a test): prints times and ratios; bench/README.md records them.

    python bench/scoring.py                          # ~6 min on 2 cores
    python bench/scoring.py --per-language 1 --repeat 1 --passes 1024

Responses are sampled once with the ``hf`` backend (the default generator, the bundled medical
questions, every language, n samples each, retrieval off), then every sample's options are
scored as if extraction had failed for all of them:

* **tree <tokens>**: ``LetterScorer.score`` as the pipeline runs it: a prompt once, each of its
  responses after it, each option after its response, in packed passes of at most <tokens>;
* **plain**: the baseline: one forward pass per (sample, option) over prompt + response + cue +
  option, the same token ids, model, dtype and threads.

Both sides give the same scores up to rounding (the largest difference and the share of samples
whose best option agrees are printed). Sides take turns, in reverse order every other turn.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    args = parse_args()
    from calm_rag.pipeline.scoring import scoring_dtype
    from calm_rag.sampling import LetterScorer

    samples = sample_responses(args)
    scorer = LetterScorer.load(dtype=scoring_dtype(), progress=False)
    prompts = len({(s.instruction, s.input) for s in samples})
    print(f"{len(samples)} samples of {prompts} prompts, scoring in {scoring_dtype()}",
          flush=True)
    sides = {f"tree {tokens}": tree_side(scorer, samples, tokens) for tokens in args.passes}
    sides["plain"] = lambda: plain_scores(scorer, samples)
    times, scores = run_turns(sides, args.repeat)
    report(times, scores, samples)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-language", type=int, default=2, help="questions per language")
    parser.add_argument("--n", type=int, default=4, help="responses per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="turns of every side")
    parser.add_argument("--passes", type=lambda text: [int(x) for x in text.split(",")],
                        default=[512, 1024, 2048], help="tree pass sizes in tokens, e.g. 1024")
    return parser.parse_args()


def sample_responses(args: argparse.Namespace) -> list:
    from calm_rag.datasets.bundled import load_bundled
    from calm_rag.sampling import HFOptions, HFSampler, SamplingParams, sample_questions

    questions, seen = [], {}
    for question in load_bundled("medical"):
        if seen.get(question.lang, 0) < args.per_language:
            seen[question.lang] = seen.get(question.lang, 0) + 1
            questions.append(question)
    started = time.perf_counter()
    sampler = HFSampler(options=HFOptions(progress=False))
    params = SamplingParams(n=args.n, max_tokens=args.max_tokens, seed=0)
    samples = sample_questions(questions, sampler, params)
    print(f"sampled {len(questions)} questions x {args.n} with hf in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return samples


def tree_side(scorer, samples: list, tokens: int):
    def run() -> list[dict[str, float]]:
        scorer.pass_tokens = tokens
        return scorer.score(samples)

    return run


def plain_scores(scorer, samples: list) -> list[dict[str, float]]:
    """The baseline: every option of every sample in a forward pass of its own."""
    import torch

    from calm_rag.runtime.threads import torch_threads

    model, results = scorer.model, []
    with torch.inference_mode(), torch_threads(scorer.threads):
        for item in scorer._tokenize(samples):
            scores = {}
            for label, option in item.options.items():
                ids = list(item.prompt) + item.tail + option
                logits = model(input_ids=torch.tensor([ids], device=model.device),
                               logits_to_keep=len(option) + 1).logits[0, :-1]
                picked = torch.log_softmax(logits.float(), dim=-1).gather(
                    1, torch.tensor(option, device=model.device)[:, None])
                scores[label] = float(picked.mean())
            results.append(scores)
    return results


def run_turns(sides: dict, repeat: int) -> tuple[dict[str, list[float]], dict]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    scores: dict = {}
    for turn in range(repeat):
        order = list(sides.items())
        for name, run in order if turn % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            scores[name] = run()
            times[name].append(time.perf_counter() - started)
            print(f"  turn {turn + 1}: {name:<10} {times[name][-1]:7.1f} s   "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    return times, scores


def report(times: dict[str, list[float]], scores: dict, samples: list) -> None:
    print()
    plain = sum(times["plain"])
    for name, runs in times.items():
        line = f"{name:<10} {len(runs)} runs {sum(runs):7.1f} s  (best {min(runs):6.1f} s)"
        if name != "plain":
            differences = [abs(found[label] - base[label])
                           for found, base in zip(scores[name], scores["plain"], strict=True)
                           for label in base]
            same = sum(max(found, key=found.get) == max(base, key=base.get)
                       for found, base in zip(scores[name], scores["plain"], strict=True))
            line += (f"  plain / tree {plain / sum(runs):5.2f}x summed, "
                     f"{min(times['plain']) / min(runs):5.2f}x best   largest score difference "
                     f"{max(differences):.4f}, same pick {same}/{len(samples)}")
        print(line)


if __name__ == "__main__":
    main()
