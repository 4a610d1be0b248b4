"""Pieces several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from calm_rag.records import Sample

INDEX_DIR_HELP = "where built indexes live (default: $CALM_RAG_INDEX_DIR or ./indexes)"


def shared_flags() -> argparse.ArgumentParser:
    """The parent parser of every subcommand: the flags any command takes, before or after
    its name (``calm-rag -v run x.yaml`` and ``calm-rag run x.yaml -v``).

    Their default is SUPPRESS: a subcommand's parser must not reset a flag that was given
    before the subcommand's name (argparse copies a subparser's defaults over the parent's).
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress details")
    return parent


def add_index_dir_option(parser: argparse.ArgumentParser, *, old_name: str | None = None
                         ) -> None:
    """``--index-dir``, the one name of the folder of built indexes; ``old_name`` is an earlier
    name that still works but is no longer shown."""
    parser.add_argument("--index-dir", type=Path, default=None, metavar="DIR", help=INDEX_DIR_HELP)
    if old_name:
        parser.add_argument(old_name, type=Path, dest="index_dir", help=argparse.SUPPRESS)


def add_extractor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--extractors", metavar="NAME[,NAME...]", default=None,
        help="answer extractors to try in order, for samples not extracted yet (default: the "
             "standard chain; with --policy calm, CALM's own reading)")


def add_group_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group", metavar="NAME|PATTERN", default=None,
        help="for a folder holding several models' or runs' CALM sample files: the group to "
             "read, named as the file name without its language code (e.g. "
             "x_csqa_train_mistral_sampled), or a file pattern (e.g. "
             "'x_csqa_*_train_sampled.json'); a folder of one group needs none")


def policy_chain(policy: str) -> tuple[str, ...] | None:
    """The extractor chain a ``--policy`` preset reads answers with, where it has one (CALM's
    pairs rest on the authors' own letter reading); None: the standard chain."""
    from calm_rag.registries import EXTRACTOR_CHAINS

    return EXTRACTOR_CHAINS.get(policy) if policy in EXTRACTOR_CHAINS else None


def load_samples(path: Path, extractors: str | None,
                 default: tuple[str, ...] | None = None, group: str | None = None
                 ) -> list[Sample]:
    """Read SAMPLES (JSONL, CALM file or folder) and extract answers not extracted yet."""
    from calm_rag.datasets.samples import read_samples
    from calm_rag.errors import InputError
    from calm_rag.vote.answers import DEFAULT_CHAIN, extract_samples

    chain = tuple(extractors.split(",")) if extractors else (default or DEFAULT_CHAIN)
    try:
        samples = read_samples(path, group=group)
    except InputError as err:  # name the flag, not the library's keyword
        if err.field != "group":
            raise
        raise InputError(err.message, path=err.path, line=err.line, field="--group",
                         hint=err.hint) from None
    return extract_samples(samples, chain)
