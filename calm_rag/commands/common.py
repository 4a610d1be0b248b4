"""Pieces several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from calm_rag.records import Sample


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
