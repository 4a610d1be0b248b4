"""Training and filling a FAISS index from embedding shards: resumable, on disk, on GPUs.

* A trained index (IVF, PQ, OPQ...) is trained on an evenly spread, fixed sample of
  ``faiss.train_size`` embeddings (by default at least what FAISS asks for the factory), and
  the trained empty index is saved in the build cache before filling, so a killed build does
  not train again (and the rerun equals an uninterrupted build: same sample, same trained
  index, same shards).
* Filling adds one embedding shard at a time: memory holds one shard and the index.
* ``faiss.on_disk``: an IVF index's inverted lists go to ``index.ivfdata`` beside the index
  (FAISS's ``OnDiskInvertedLists``), so the filled index need not fit in RAM.
* ``faiss.gpu``: training and filling run on a GPU when FAISS has GPU support (the
  retriever searches on all of them), and on the CPU otherwise (logged once).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from calm_rag.errors import InputError
from calm_rag.io import atomic_write
from calm_rag.retrieval import faiss_index
from calm_rag.retrieval.shards import EmbeddingShards
from calm_rag.retrieval.spec import FaissConfig
from calm_rag.runtime.provenance import json_digest

log = logging.getLogger(__name__)

IVF_DATA_FILE = "index.ivfdata"
Plan = list[tuple[str, int]]
"""The embedding shards of a build in row order: ``(shard key, rows)``."""


def fill_index(index: Any, config: FaissConfig, shards: EmbeddingShards, plan: Plan,
               folder: Path, progress: bool) -> Any:
    """Train ``index`` if it needs it, add every shard, and return the index to save (on the
    CPU; its inverted lists in ``folder/index.ivfdata`` when ``on_disk``)."""
    from calm_rag.runtime.progress import progress_bar

    faiss_index.configure_build(index, config)
    if not index.is_trained:
        index = _trained(index, config, shards, plan)
    if config.on_disk:
        _lists_on_disk(index, folder / IVF_DATA_FILE)
    devices = gpu_count() if config.gpu else 0
    if config.gpu and not devices:
        log.info("faiss.gpu: no GPU visible to FAISS (or faiss-cpu installed): building on "
                 "the CPU%s", "" if _torch_gpus() else " (the embeddings too)")
    # One GPU fills (a sharded multi-GPU index would come back as shards, not one index);
    # the saved index is searched on every GPU by the retriever.
    working = (faiss_index.to_gpus(index, every_gpu=False) if devices and not config.on_disk
               else index)
    total = sum(rows for _, rows in plan)
    with progress_bar("indexing", total, unit="chunk", enabled=progress) as bar:
        for key, rows in plan:
            working.add(np.ascontiguousarray(planned_shard(shards, key, rows)))
            bar.update(rows)
    if working is not index:
        import faiss

        index = faiss.index_gpu_to_cpu(working)
    faiss_index.configure_search(index, config)
    return index


def gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _torch_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _trained(index: Any, config: FaissConfig, shards: EmbeddingShards, plan: Plan) -> Any:
    """The index trained on the build's sample, from the cache when a killed build trained it."""
    import faiss

    size = faiss_index.train_size(config, index)
    key = json_digest({"factory": config.factory, "metric": config.metric,
                       "train_size": size, "dimension": index.d,
                       "shards": plan, "faiss": faiss.__version__}, ascii_only=True)
    cached = shards.folder / f"trained-{key[:32]}.faiss"
    if cached.is_file():
        log.info("reusing the trained %s from %s", config.factory, cached)
        trained = faiss_index.read_index(cached)
        faiss_index.configure_build(trained, config)
        return trained
    sample = training_sample(shards, plan, size)
    log.info("training %s on %d vectors", config.factory, len(sample))
    if config.gpu and gpu_count():
        # One GPU trains (GPU k-means); the clones that fill it all share its quantizer.
        on_gpu = faiss_index.to_gpus(index, every_gpu=False)
        trained = _train(on_gpu, config, sample)
        if on_gpu is not index:
            trained = faiss.index_gpu_to_cpu(trained)
    else:
        trained = _train(index, config, sample)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cached, "wb") as handle:
        handle.write(faiss.serialize_index(trained).tobytes())
    return trained


def _train(index: Any, config: FaissConfig, sample: np.ndarray) -> Any:
    faiss_index.train(index, config, sample)
    return index


def check_layout(index: Any, config: FaissConfig) -> None:
    """Refuse before any work a layout the factory cannot have (on disk without IVF lists)."""
    import faiss

    if config.on_disk and faiss.try_extract_index_ivf(index) is None:
        raise InputError(f"{config.factory!r} has no inverted lists to keep on disk",
                         field="faiss.on_disk", hint="use an IVF factory (IVF4096,PQ64) or "
                                                     "set on_disk: false")


def _lists_on_disk(index: Any, path: Path) -> None:
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    ivf.replace_invlists(lists, True)
    # The lists object is owned by the index now; its file is named relative to the folder
    # when read back (IO_FLAG_ONDISK_SAME_DIR), so the folder can move.
    lists.this.disown()  # type: ignore[attr-defined]


def training_sample(shards: EmbeddingShards, plan: Plan, size: int) -> np.ndarray:
    """An evenly spread, fixed sample: the same corpus always trains the same index."""
    total = sum(rows for _, rows in plan)
    wanted = np.unique(np.linspace(0, total - 1, num=min(size, total)).astype(np.int64))
    parts, offset = [], 0
    for key, rows in plan:
        inside = wanted[(wanted >= offset) & (wanted < offset + rows)] - offset
        if len(inside):
            parts.append(np.asarray(planned_shard(shards, key, rows)[inside]))
        offset += rows
    return np.ascontiguousarray(np.concatenate(parts))


def planned_shard(shards: EmbeddingShards, key: str, rows: int) -> np.ndarray:
    """A shard the plan found on disk moments ago; gone now only if something removed it."""
    vectors = shards.load(key, rows)
    if vectors is None:
        raise InputError("an embedding shard vanished during the build", path=shards.path(key),
                         hint="leave the index's .cache folder alone during a build; build again")
    return vectors
