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
import threading
import time
from pathlib import Path

from calm_rag.config import from_mapping
from calm_rag.errors import InputError
from calm_rag.io import read_json, write_json
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
        write_json(work / f"error-{rank}.json", {
            "message": err.message, "path": err.path, "line": err.line, "field": err.field,
            "hint": err.hint})
        return 2
    return 0


def _trainer(method: str, config: AlignConfig, rows: list) -> MakeTrainer:
    if method == "sft":
        from calm_rag.training.sft import sft_trainer

        return sft_trainer(config, rows)
    from calm_rag.training.dpo import dpo_trainer

    return dpo_trainer(config, rows)


def _watch_parent() -> None:
    """Exit when the pipeline that launched us is gone: a killed run must not train on."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if not parent:
        return

    def watch() -> None:
        while _alive(parent):
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _alive(pid: int) -> bool:
    """Running, not a zombie its own parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc here: assume alive
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


if __name__ == "__main__":
    sys.exit(main())
