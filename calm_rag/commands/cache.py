"""``calm-rag cache list | prune``: what the stage cache holds, and removing what no run needs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

MB = 1024 * 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cache", help="list or prune the stage cache (<runs_dir>/.cache)",
        description="The stage cache keeps every stage's output under a key of its inputs. "
                    "An entry is referenced while a run folder's manifest.json names it; "
                    "prune removes only entries no run references.")
    commands = p.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")
    runs_help = "the runs folder whose .cache is meant (default: %(default)s)"
    listing = commands.add_parser("list", help="entries per stage: size, age, runs using them")
    listing.add_argument("--runs-dir", type=Path, default=Path("runs"), help=runs_help)
    listing.set_defaults(func=run_list)
    pruning = commands.add_parser(
        "prune", help="remove entries no run references (by age, by size)",
        description="Remove finished cache entries that no run folder references: those older "
                    "than --older-than, then the oldest while the cache is over --max-size; "
                    "neither given, every unreferenced entry. A killed run's resumable work "
                    "and any entry a run holds now are kept.")
    pruning.add_argument("--runs-dir", type=Path, default=Path("runs"), help=runs_help)
    pruning.add_argument("--older-than", type=float, metavar="DAYS",
                         help="only entries finished at least DAYS days ago")
    pruning.add_argument("--max-size", type=float, metavar="GB",
                         help="remove the oldest unreferenced entries until the cache is at "
                              "most GB gigabytes")
    pruning.add_argument("--dry-run", action="store_true", help="say what would go; remove "
                                                                 "nothing")
    pruning.set_defaults(func=run_prune)


def run_list(args: argparse.Namespace) -> int:
    from calm_rag.pipeline.cache_usage import cache_entries

    entries = cache_entries(_runs_dir(args))
    now, stage = time.time(), None
    for entry in entries:
        if entry.stage != stage:
            stage = entry.stage
            ours = [e for e in entries if e.stage == stage]
            print(f"{stage}: {len(ours)} entries, {_mb(sum(e.size for e in ours))}")
        state = "" if entry.done else " (unfinished: a killed run's work)"
        runs = ", ".join(entry.runs) if entry.runs else "no run"
        print(f"  {entry.key[:16]:<16} {_mb(entry.size):>10} {entry.age_days(now):6.1f} days"
              f"  {runs}{state}")
    referenced = sum(e.size for e in entries if e.runs)
    print(f"total: {len(entries)} entries, {_mb(sum(e.size for e in entries))}; referenced "
          f"by runs: {_mb(referenced)}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from calm_rag.errors import InputError
    from calm_rag.pipeline.cache_usage import cache_entries, prune, prune_plan

    for name, value in (("--older-than", args.older_than), ("--max-size", args.max_size)):
        if value is not None and not value >= 0:
            raise InputError(f"must be 0 or more, got {value}", field=name)
    runs_dir = _runs_dir(args)
    entries = cache_entries(runs_dir)
    before = sum(e.size for e in entries)
    max_bytes = None if args.max_size is None else int(args.max_size * 1024**3)
    plan = prune_plan(entries, older_than_days=args.older_than, max_bytes=max_bytes)
    removed = plan if args.dry_run else prune(runs_dir, plan)
    gone = sum(e.size for e in removed)
    verb = "would remove" if args.dry_run else "removed"
    print(f"before: {_mb(before)} in {len(entries)} entries")
    print(f"{verb}: {len(removed)} entries no run references, {_mb(gone)}"
          + (f" ({len(plan) - len(removed)} in use by a run now, kept)"
             if len(removed) < len(plan) else ""))
    print(f"after: {_mb(before - gone)} in {len(entries) - len(removed)} entries")
    return 0


def _runs_dir(args: argparse.Namespace) -> Path:
    from calm_rag.errors import InputError

    if not (args.runs_dir / ".cache").is_dir():
        raise InputError("holds no stage cache (.cache)", path=args.runs_dir,
                         field="--runs-dir", hint="name the runs folder of your experiments")
    return args.runs_dir


def _mb(size: int) -> str:
    """``size`` bytes for a reader: kB below a megabyte, MB below a gigabyte, else GB."""
    for unit, scale in (("GB", 1024**3), ("MB", MB)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1024:.1f} kB"
