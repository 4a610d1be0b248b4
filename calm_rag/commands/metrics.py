"""``calm-rag metrics``: accuracy, extraction and cross-lingual agreement of samples."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calm_rag.commands.common import add_extractor_option, load_samples


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "metrics", help="accuracy per language and cross-lingual consistency",
        description="Accuracy per language against gold, extraction rates, CALM's "
                    "cross-lingual consistency, Krippendorff's alpha (languages as raters) "
                    "and answer entropy across languages, with bootstrap 95%% intervals.")
    p.add_argument("samples", type=Path, metavar="SAMPLES",
                   help="a samples JSONL, a CALM sample file, or a folder of CALM sample files")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_extractor_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calm_rag.evaluation import compute_metrics, format_metrics_table

    metrics = compute_metrics(load_samples(args.samples, args.extractors))
    print(json.dumps(metrics, indent=2) if args.json else format_metrics_table(metrics))
    return 0
