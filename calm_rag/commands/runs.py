"""``calm-rag runs [NAME]``: finished runs side by side, with the config keys that differ."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HEADLINE = ("consistency", "consistent_correct")
"""The figures shown by default: CALM's aim, and its agreement that is also right."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "runs", help="a table of finished runs: headline metrics, differing config keys",
        description="One row per finished run (a folder with metrics.json) under --runs-dir, "
                    "oldest first: the metrics of one evaluation cell per setting (as metrics.json "
                    "has them), "
                    "then each config key whose value is not the same in every run listed.")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="only the runs of this experiment (default: every experiment)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where the run folders are (default: %(default)s)")
    p.add_argument("--metric", action="append", metavar="NAME", dest="metrics",
                   help="a metric to show (repeatable; a per-language one gets a column a "
                        f"language; default: {', '.join(HEADLINE)})")
    p.add_argument("--cell", metavar="SPLIT/PHASE",
                   help="the evaluation cell shown (default: each run's last, e.g. "
                        "heldout/after)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calm_rag.runs import RunFolder

    folders = finished_runs(args.runs_dir, args.name)
    runs = [RunFolder(folder) for folder in folders]
    metrics = tuple(args.metrics or HEADLINE)
    rows = [headline(r, metrics, args.cell) for r in runs]
    differ = differing_keys([flat_config(r.path / "config.yaml") for r in runs])
    for row, config in zip(rows, differ, strict=True):
        row.update(config)
    print(markdown_table(rows))
    print(f"{len(runs)} run(s) in {args.runs_dir}; " + (
        f"config keys that differ: {', '.join(differ[0])}" if differ and differ[0]
        else "their configs do not differ"))
    return 0


def finished_runs(runs_dir: Path, name: str | None) -> list[Path]:
    """Run folders with ``metrics.json`` (finished), by experiment then timestamp."""
    from calm_rag.errors import InputError

    experiments = [runs_dir / name] if name else sorted(
        p for p in runs_dir.glob("*") if p.is_dir() and not p.name.startswith("."))
    folders = [f for e in experiments for f in sorted(e.glob("*/metrics.json"))]
    if not folders:
        what = f"experiment {name!r}" if name else "any experiment"
        raise InputError(f"no finished run of {what}", path=runs_dir / (name or ""),
                         hint="calm-rag run EXPERIMENT writes one; --runs-dir names another folder")
    return [f.parent for f in folders]


def headline(run: Any, metrics: tuple[str, ...], cell: str | None) -> dict[str, str]:
    """The row of one run: its name, timestamp, cell and the chosen figures."""
    from calm_rag.errors import InputError

    frame = run.metrics_frame()
    cells = list(dict.fromkeys(frame["cell"]))
    shown = cell or (cells[-1] if cells else "")
    if cell and cell not in cells:
        raise InputError(f"{run.path.name} has no cell {cell!r} (it has {', '.join(cells)})",
                         field="--cell", path=run.path / "metrics.json")
    row = {"run": f"{run.name}/{run.path.name}", "cell": shown}
    ours = frame[frame["cell"] == shown]
    for item in ours[ours["metric"].isin(metrics)].itertuples(index=False):
        lang = f" {item.lang}" if isinstance(item.lang, str) else ""
        row[f"{item.setting} {item.metric}{lang}"] = f"{item.value:.3f}"
    return row


def flat_config(path: Path) -> dict[str, str]:
    """A run's ``config.yaml`` as dotted keys and their values (written as YAML writes them);
    a missing file gives no keys."""
    from calm_rag.config import read_yaml

    if not path.is_file():
        return {}
    data, _ = read_yaml(path)
    return dict(_flatten(data, ""))


def _flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        return [item for key, sub in value.items()
                for item in _flatten(sub, f"{prefix}.{key}" if prefix else str(key))]
    return [(prefix, _show(value))]


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def differing_keys(configs: list[dict[str, str]]) -> list[dict[str, str]]:
    """Per config, the keys (and values) that are not the same in all of them; a key a
    config lacks shows as ``-``. With one config nothing differs."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    differ = [k for k in keys if len({c.get(k, "-") for c in configs}) > 1]
    return [{k: c.get(k, "-") for k in differ} for c in configs]


def markdown_table(rows: list[dict[str, str]]) -> str:
    """A Markdown table of the rows, columns in first-seen order, ``-`` where a row has none."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "-") for c in columns) + " |" for row in rows]
    return "\n".join(lines)
