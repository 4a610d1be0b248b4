"""Training in a child under ``accelerate launch``: several processes, GPUs or nodes.

The parent writes the job (config and rows) into ``_launch/`` of the staging folder and runs
``python -m accelerate.commands.launch ... -m calm_rag.training.launched STAGING``; every rank
reads the job, trains, and rank 0 writes the adapter, log and plot into the staging folder.
Several processes without a sharding config go through torchrun (``--multi_gpu``): on a GPU
each rank takes one device (NCCL), on a CPU the ranks talk over gloo (accelerate picks it when
the trainer says ``use_cpu``). A sharding config (``align.distributed``) is a file of
``launch_configs/`` or the user's own accelerate config.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calm_rag.errors import InputError
from calm_rag.io import read_json, write_json
from calm_rag.registries import ALIGN_METHODS
from calm_rag.runtime.child_process import error_from
from calm_rag.runtime.threads import available_cores
from calm_rag.training.config import DISTRIBUTED, AlignConfig

if TYPE_CHECKING:
    from calm_rag.training.common import TrainJob

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).parent / "launch_configs"
PARENT_ENV = "CALM_RAG_TRAINING_PARENT"  # the ranks stop when this pid is gone


def launch(job: TrainJob, rows: list[dict[str, Any]], staging: Path) -> None:
    """Train ``job`` in a child under ``accelerate launch``; rank 0 writes ``staging``."""
    if not ALIGN_METHODS.get(job.method, "align.method").launchable:
        raise InputError(f"method {job.method!r} cannot run under a launcher",
                         field="align.launcher", hint="its ranks could not rebuild it by name: "
                         "use launcher: none")
    work = staging / "_launch"
    work.mkdir()
    write_json(work / "job.json", {
        "method": job.method, "model_path": job.model_path, "adapter": job.adapter,
        "checkpoints": str(job.checkpoints), "config": job.config.to_dict()})
    # On disk, not in memory: the ranks then share the cache files of TRL's dataset maps
    # (rank 0 maps first, the others read its files), which in-memory datasets keep in a
    # private temporary folder.
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(work / "rows"))
    command = launch_command(job.config, staging)
    log.info("training under: %s", " ".join(command))
    env = os.environ | {PARENT_ENV: str(os.getpid())}
    child = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        code = child.wait()
    except BaseException:  # Ctrl-C or an error here: the ranks must not train on unseen
        _stop(child)
        raise
    errors = sorted(work.glob("error-*.json"))
    if errors:  # a rank's InputError, raised here as the user's
        raise error_from(read_json(errors[0]), "the launched training")
    if code != 0:
        raise RuntimeError(f"accelerate launch exited with code {code} (its log is above)")
    shutil.rmtree(work)
    if job.config.machine_rank > 0:  # rank 0's node writes the adapter; this one is done
        log.info("machine_rank %d: training done; the main node writes the adapter",
                 job.config.machine_rank)
        raise SystemExit(0)


def launch_command(config: AlignConfig, staging: Path) -> list[str]:
    """The ``accelerate launch`` command line for the ``align:`` block."""
    local = max(1, config.num_processes // config.num_machines)
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--num_processes", str(config.num_processes),
               "--num_machines", str(config.num_machines),
               "--machine_rank", str(config.machine_rank),
               "--num_cpu_threads_per_process",
               str(config.threads or max(1, available_cores() // local))]
    if config.main_process_ip:
        command += ["--main_process_ip", config.main_process_ip]
    if config.main_process_port:
        command += ["--main_process_port", str(config.main_process_port)]
    if config.distributed:
        command += ["--config_file", str(config_file(config.distributed))]
    else:
        # The trainer's arguments decide the precision; several ranks go through torchrun.
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        if config.num_processes > 1:
            command.append("--multi_gpu")
    return [*command, "-m", "calm_rag.training.launched", str(staging)]


def config_file(distributed: str) -> Path:
    """A shipped config by name (zero2, zero3, fsdp), else the user's file."""
    return CONFIGS / f"{distributed}.yaml" if distributed in DISTRIBUTED else Path(distributed)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Stop the launcher and its ranks (their own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
            child.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
