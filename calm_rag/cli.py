"""The ``calm-rag`` command: thin wrappers over the library (a notebook does the same)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Any, NoReturn

from calm_rag import TELEMETRY_OFF
from calm_rag.errors import InputError
from calm_rag.runtime.progress import quiet_third_party

for _name, _value in TELEMETRY_OFF.items():  # importing calm_rag set them; kept explicit here
    os.environ.setdefault(_name, _value)

# Filesystem failures that are the user's to fix (a path, a permission, a full disk), printed
# as one line; any other OSError is a bug or an outage and keeps its traceback.
USER_FS_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError)
USER_FS_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP,
                  errno.EACCES, errno.EPERM}

# Each command module has ``register(subparsers)``, which adds its parser and sets
# ``func(args) -> int``. Listed by module path so ``--help`` stays fast.
COMMAND_MODULES = (
    "calm_rag.commands.vote",
    "calm_rag.commands.export",
    "calm_rag.commands.metrics",
    "calm_rag.commands.index",
    "calm_rag.commands.models",
    "calm_rag.commands.run",
    "calm_rag.commands.study",
    "calm_rag.commands.cache",
    "calm_rag.commands.explore",
    "calm_rag.commands.runs",
)


class SharedFlagsSubParsers(argparse._SubParsersAction):
    """Subcommands whose parsers all take the shared flags (commands.common.shared_flags)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        from calm_rag.commands.common import shared_flags

        kwargs["parents"] = [shared_flags(), *kwargs.get("parents", ())]
        return super().add_parser(name, **kwargs)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where the help is), exit 2;
    its subcommands' parsers are of this class too, and take the shared flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", SharedFlagsSubParsers)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(
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
    show_pipeline_progress()
    quiet_third_party(args.verbose)  # before a command imports transformers or datasets
    try:
        return int(args.func(args) or 0)
    except InputError as err:  # several errors (a config file's): one line each
        for line in str(err).splitlines():
            print(f"calm-rag {args.command}: error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return stopped_reading()
    except OSError as err:
        if not (isinstance(err, USER_FS_ERRORS) or err.errno in USER_FS_ERRNOS):
            raise
        print(f"calm-rag {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"calm-rag {args.command}: interrupted", file=sys.stderr)
        return 130


def stopped_reading() -> int:
    """What a pipe's writer does when its reader has gone (``calm-rag runs | head -3``): stop
    without a traceback, with the exit status of a process SIGPIPE ended (128 + 13). Output still
    buffered goes nowhere, so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def show_pipeline_progress() -> None:
    """The pipeline's stage lines (what ran, what was cached) go to stderr as plain lines; a
    notebook or another program sees them only if it configures logging."""
    pipeline = logging.getLogger("calm_rag.pipeline")
    for old in list(pipeline.handlers):  # main() may run again in one process (tests)
        pipeline.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call
    handler.setFormatter(logging.Formatter("%(message)s"))
    pipeline.addHandler(handler)
    pipeline.setLevel(logging.INFO)
    pipeline.propagate = False


def describe_os_error(err: OSError) -> str:
    """``path: what happened`` for a filesystem error (both paths of a failed rename)."""
    where = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    reason = err.strerror or str(err)
    return f"{where}: {reason}" if where else reason


if __name__ == "__main__":
    sys.exit(main())
