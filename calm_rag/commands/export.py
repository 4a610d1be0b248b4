"""``calm-rag export``: preference pairs as TRL rows or LLaMA-Factory DPO files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export pairs for TRL or LLaMA-Factory",
        description="Export pairs.jsonl (from `calm-rag vote`) as TRL rows (DIR/dpo.jsonl) or "
                    "LLaMA-Factory files (DIR/<prefix>_<lang>.json, their entries merged into "
                    "the folder's dataset_info.json). Other files in DIR are left alone; a file "
                    "or entry of the same name is refused unless --overwrite; pairs whose "
                    "chosen and rejected texts are equal are skipped (nothing to learn from "
                    "them).")
    p.add_argument("pairs", type=Path, metavar="PAIRS",
                   help="pairs.jsonl, or the folder `calm-rag vote` wrote")
    p.add_argument("--format", required=True, choices=("trl", "llamafactory"), dest="fmt")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder (created if absent; e.g. LLaMA-Factory's data/)")
    p.add_argument("--form", choices=("conversational", "standard"), default="conversational",
                   help="TRL row form (default: %(default)s)")
    p.add_argument("--calm-names", action="store_true",
                   help="LLaMA-Factory files named with CALM's codes (cn for zh)")
    p.add_argument("--prefix", default="DPO",
                   help="LLaMA-Factory dataset names and files <prefix>_<lang>(.json), so "
                        "that experiments exported into one data/ folder keep apart "
                        "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files (and dataset_info.json entries) of the same name that "
                        "an earlier export wrote")
    p.set_defaults(func=run)


def pairs_file(path: Path) -> Path:
    """PAIRS as given, or the pairs.jsonl of the folder `calm-rag vote` wrote."""
    from calm_rag.errors import InputError

    if not path.is_dir():
        return path
    found = path / "pairs.jsonl"
    # A folder of CALM sample files (perhaps several models') is what `vote` reads, not this.
    if not found.exists() and any(path.glob("*.json")):
        raise InputError("holds *.json files but no pairs.jsonl: export reads the pairs "
                         "`calm-rag vote` writes, not sample files", path=path,
                         hint="run `calm-rag vote` on this folder first, with --group where "
                              "it holds several models' files, and export its --out folder")
    return found


def read_pairs(path: Path):
    from calm_rag.errors import InputError
    from calm_rag.io import read_jsonl
    from calm_rag.records import PreferencePair

    path = pairs_file(path)
    pairs: list[PreferencePair] = []
    seen: dict[tuple[str, str, str], int] = {}
    for line, obj in read_jsonl(path):
        pair = PreferencePair.from_dict(obj, path=path, line=line)
        key = (pair.lang, pair.chosen_sample_id, pair.rejected_sample_id)
        if key in seen:  # a repeated row would weigh twice in training
            raise InputError(f"the same pair as line {seen[key]} (chosen "
                             f"{pair.chosen_sample_id}, rejected {pair.rejected_sample_id})",
                             path=path, line=line, hint="remove one of them")
        seen[key] = line
        pairs.append(pair)
    return pairs


def useful_pairs(pairs: list) -> tuple[list, int]:
    """Pairs whose chosen differs from rejected, and how many were not (DPO's loss on such a
    pair is a constant: it only dilutes the batch)."""
    kept = [pair for pair in pairs if pair.chosen != pair.rejected]
    return kept, len(pairs) - len(kept)


def refuse_replacing(args: argparse.Namespace, pairs: list) -> None:
    """An export never replaces silently: a file the export would write, or a
    dataset_info.json entry of the same name, already in ``--out`` is an error: a second
    experiment exported into the same data/ folder would replace the first one's rows."""
    from calm_rag.datasets.calm import llamafactory_names
    from calm_rag.errors import InputError
    from calm_rag.io import read_json_object

    hint = "choose another --prefix or --out, or pass --overwrite to replace it"
    if args.fmt == "trl":
        names, hint = ["dpo"], "choose another --out, or pass --overwrite to replace it"
    else:
        names = sorted(set(llamafactory_names(pairs, args.calm_names, args.prefix).values()))
    suffix = ".jsonl" if args.fmt == "trl" else ".json"
    for name in names:
        if (args.out / f"{name}{suffix}").exists():
            raise InputError(f"{name}{suffix} is already there", path=args.out, hint=hint)
    info = args.out / "dataset_info.json"
    if args.fmt == "llamafactory" and info.is_file():
        try:
            entries = read_json_object(info)
        except InputError:
            return  # the merge refuses it, saying why, before anything is written
        for name in names:
            if name in entries:
                raise InputError(f"dataset_info.json already has an entry {name}",
                                 path=args.out, hint=hint)


def run(args: argparse.Namespace) -> int:
    from calm_rag.datasets.calm import export_llamafactory
    from calm_rag.datasets.trl import trl_row
    from calm_rag.errors import InputError
    from calm_rag.io import output_folder, refuse_inputs, safe_name, write_jsonl

    inputs = [args.pairs, pairs_file(args.pairs)]
    refuse_inputs(args.out, inputs)  # before reading, so the input is named first
    pairs, skipped = useful_pairs(read_pairs(args.pairs))
    if skipped:
        print(f"skipped {skipped} pair(s) whose chosen text equals the rejected one")
    if not pairs:
        raise InputError("no pair to export", path=args.pairs,
                         hint="every pair had chosen equal to rejected")
    safe_name(args.prefix, field="--prefix")  # names files: no folder part
    if not args.overwrite:
        refuse_replacing(args, pairs)
    with output_folder(args.out, inputs=inputs) as folder:
        if args.fmt == "llamafactory":
            counts = export_llamafactory(pairs, folder, calm_names=args.calm_names,
                                         prefix=args.prefix)
        else:
            n = write_jsonl(folder.path("dpo.jsonl"), (trl_row(p, args.form) for p in pairs))
    if args.fmt == "llamafactory":
        for code, n in sorted(counts.items()):
            print(f"{args.prefix}_{code}.json: {n} rows")
        print("dataset_info.json: entries merged")
    else:
        print(f"dpo.jsonl: {n} {args.form} rows")
    print(f"wrote {args.out}")
    return 0
