"""One rank of a launched training: ``python -m calm_rag.training.launched STAGING``.

Started by ``accelerate launch`` (see :mod:`calm_rag.training.launch`), once per process; it
reads the job its parent wrote into ``STAGING/_launch/``, trains, and rank 0 writes the adapter,
log and plot into ``STAGING``. A user error is written to ``_launch/error-RANK.json`` for the
parent to raise as its own; the rank stops when the parent is gone (``kill -9`` included).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.io import read_json, write_json
from calm_rag.registries import ALIGN_METHODS
from calm_rag.runtime.child_process import describe_error, exit_with_parent
from calm_rag.training.common import MakeTrainer, TrainJob, train_into
from calm_rag.training.config import AlignConfig
from calm_rag.training.launch import PARENT_ENV


def main(argv: list[str] | None = None) -> int:
    from datasets import load_from_disk

    staging = Path((argv if argv is not None else sys.argv[1:])[0])
    work = staging / "_launch"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _watch_parent()
    given = read_json(work / "job.json")
    rank = os.environ.get("RANK", "0")
    try:
        config = from_mapping(AlignConfig, given["config"], prefix="align")
        dataset = load_from_disk(str(work / "rows"))
        job = TrainJob(given["method"], given["model_path"], config,
                       Path(given["checkpoints"]), given["adapter"])
        train_into(job, dataset, staging, _trainer(job.method, config, dataset.to_list()))
    except InputError as err:
        write_json(work / f"error-{rank}.json", describe_error(err))  # as a worker's crosses
        return 2
    return 0


def _trainer(method: str, config: AlignConfig, rows: list[dict[str, Any]]) -> MakeTrainer:
    """The method's trainer, rebuilt by its name (the launcher refused any method that is
    not :attr:`~calm_rag.training.methods.AlignMethod.launchable`)."""
    return ALIGN_METHODS.get(method, "align.method").trainer(config, rows)


def _watch_parent() -> None:
    """Exit when the pipeline that launched us is gone: a killed run must not train on."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if parent:
        exit_with_parent(parent)


if __name__ == "__main__":
    sys.exit(main())
