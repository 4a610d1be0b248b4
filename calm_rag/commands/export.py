"""``calm-rag export``: preference pairs as TRL rows or LLaMA-Factory DPO files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export pairs for TRL or LLaMA-Factory",
        description="Export pairs.jsonl (from `calm-rag vote`) as TRL rows (DIR/dpo.jsonl) or "
                    "LLaMA-Factory files (DIR/DPO_<lang>.json + dataset_info.json).")
    p.add_argument("pairs", type=Path, metavar="PAIRS",
                   help="pairs.jsonl, or the folder `calm-rag vote` wrote")
    p.add_argument("--format", required=True, choices=("trl", "llamafactory"), dest="fmt")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--form", choices=("conversational", "standard"), default="conversational",
                   help="TRL row form (default: %(default)s)")
    p.add_argument("--calm-names", action="store_true",
                   help="LLaMA-Factory files named with CALM's codes (cn for zh)")
    p.set_defaults(func=run)


def read_pairs(path: Path):
    from calm_rag.io import read_jsonl
    from calm_rag.records import PreferencePair

    if path.is_dir():
        path = path / "pairs.jsonl"
    return [PreferencePair.from_dict(obj, path=path, line=line) for line, obj in read_jsonl(path)]


def run(args: argparse.Namespace) -> int:
    from calm_rag.datasets.calm import export_llamafactory
    from calm_rag.datasets.trl import export_trl
    from calm_rag.io import atomic_dir

    pairs = read_pairs(args.pairs)
    if args.fmt == "llamafactory":
        counts = export_llamafactory(pairs, args.out, calm_names=args.calm_names)
        for code, n in sorted(counts.items()):
            print(f"DPO_{code}.json: {n} rows")
    else:
        with atomic_dir(args.out) as staging:
            n = export_trl(pairs, staging / "dpo.jsonl", form=args.form)
        print(f"dpo.jsonl: {n} {args.form} rows")
    print(f"wrote {args.out}")
    return 0
