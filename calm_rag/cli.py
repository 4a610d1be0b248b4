"""The ``calm-rag`` command: thin wrappers over the library (a notebook does the same)."""

from __future__ import annotations

import argparse
import logging
import sys

from calm_rag.errors import InputError

# Each command module has ``register(subparsers)``, which adds its parser and sets
# ``func(args) -> int``. Listed by module path so ``--help`` stays fast.
COMMAND_MODULES = (
    "calm_rag.commands.vote",
    "calm_rag.commands.export",
    "calm_rag.commands.metrics",
    "calm_rag.commands.index",
    "calm_rag.commands.models",
    "calm_rag.commands.run",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="calm-rag",
        description="Cross-lingual self-alignment (CALM), zero-shot or retrieval-augmented.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"calm-rag {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"calm-rag {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
