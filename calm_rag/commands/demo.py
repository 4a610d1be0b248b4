"""``calm-rag demo``: the default model on the bundled questions, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from calm_rag.demo import DemoConfig

    defaults = DemoConfig()
    p = subparsers.add_parser(
        "demo", help="sample, vote, pair and measure on the bundled data",
        description="The embedded default model answers bundled questions in six languages, "
                    "zero-shot and with retrieval; writes samples, votes, pairs (TRL and "
                    "LLaMA-Factory), metrics.json and report.md to --out.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--dataset", default=defaults.dataset, choices=("medical", "commonsense"))
    p.add_argument("--questions", type=int, default=defaults.questions,
                   help="questions taken, each in every language (default: %(default)s)")
    p.add_argument("--n", type=int, default=defaults.n,
                   help="samples per question and language (default: %(default)s)")
    p.add_argument("--model", default=defaults.model, help="generator (default: %(default)s)")
    p.add_argument("--no-retrieval", dest="retrieval", action="store_false",
                   help="zero-shot only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calm_rag.demo import DemoConfig, run_demo

    config = DemoConfig(dataset=args.dataset, questions=args.questions, n=args.n,
                        model=args.model, retrieval=args.retrieval)
    result = run_demo(config, args.out)
    print(result["table"])
    print(f"\n{result['samples']} samples, {result['votes']} votes, {result['pairs']} pairs")
    print(f"report: {args.out / 'report.md'}")
    return 0
