"""``calm-rag explore``: a run's explorer, one self-contained ``explore.html``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explore", help="write a run's explorer page (explore.html)",
        description="Write explore.html into a run folder (or a language-set grid's folder): "
                    "every question across languages (samples, vote, retrieved passages, "
                    "pairs, answers before and after alignment), with filters and a sortable "
                    "questions table. One file, opened from disk: no server, no network.")
    p.add_argument("run", metavar="RUN",
                   help="a run folder, an experiment's folder (its newest run), or an "
                        "experiment's name in --runs-dir")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where a bare experiment name is looked for (default: %(default)s)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="write the page here instead of RUN/explore.html")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calm_rag.explore import write_explorer

    path = write_explorer(args.run, args.runs_dir, args.out)
    print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0
