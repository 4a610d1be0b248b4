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


def load_samples(path: Path, extractors: str | None,
                 default: tuple[str, ...] | None = None) -> list[Sample]:
    """Read SAMPLES (JSONL, CALM file or folder) and extract answers not extracted yet."""
    from calm_rag.answers import DEFAULT_CHAIN, extract_samples
    from calm_rag.datasets.samples import read_samples

    chain = tuple(extractors.split(",")) if extractors else (default or DEFAULT_CHAIN)
    return extract_samples(read_samples(path), chain)
