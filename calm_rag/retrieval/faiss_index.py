"""FAISS: making an index from a factory string, training, searching with a row filter.

Scores are similarities (higher is better) whatever the metric: ``ip`` gives the inner product,
``l2`` the negated squared distance.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, get_args, get_type_hints

import numpy as np

from calm_rag.errors import InputError
from calm_rag.retrieval.spec import FaissConfig

log = logging.getLogger(__name__)

DEFAULT_TRAIN_SIZE = 100_000
"""The training sample when the spec names none, unless the factory needs more."""
FACTORY_HINT = "examples: Flat, HNSW32, IVF1024,Flat, IVF4096,PQ64"
METRICS: tuple[str, ...] = get_args(get_type_hints(FaissConfig)["metric"])
"""The metrics a spec may name (``ip``, ``l2``): a manifest naming another is refused."""


def faiss_metric(metric: str) -> int:
    """FAISS's constant for one of :data:`METRICS`."""
    import faiss

    return {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}[metric]


def make_index(config: FaissConfig, dimension: int) -> Any:
    """An empty index; a factory string FAISS cannot parse is an input error."""
    import faiss

    try:
        return faiss.index_factory(dimension, config.factory, faiss_metric(config.metric))
    except RuntimeError as err:
        reason = _faiss_reason(err)
        raise InputError(f"FAISS cannot build {config.factory!r} for {dimension}-dimensional "
                         f"vectors: {reason}", field="faiss.factory", hint=FACTORY_HINT) from None


def check_trainable(index: Any, config: FaissConfig, rows: int) -> None:
    """Refuse early (before embedding) an index FAISS cannot train on the chunks it would get
    (a k-means with more centroids than vectors), and say when it gets fewer than FAISS asks
    for (it trains, but its clusters are poor)."""
    largest = max(kmeans_centroids(index), default=0)
    size = min(rows, train_size(config, index))
    if size < largest:
        raise InputError(
            f"{config.factory!r} trains {largest} centroids (inverted lists or PQ codes) but "
            f"has only {size} chunks to train them on", field="faiss.factory",
            hint="use Flat or HNSW32 for a small corpus, or fewer lists")
    if rows < training_points_needed(index):
        log.warning("%r asks for %d training vectors (FAISS's %d per centroid x %d centroids) "
                    "but the corpus has %d chunks: the clusters will be poor; fewer lists, or "
                    "Flat or HNSW32, suit a corpus this small", config.factory,
                    training_points_needed(index), min_points_per_centroid(), largest, rows)


def check_train_size(index: Any, config: FaissConfig) -> None:
    """Say when the spec's own ``faiss.train_size`` is below what the factory needs (FAISS
    would print its "please provide at least" warning mid-build)."""
    needed = training_points_needed(index)
    if config.train_size is not None and config.train_size < needed:
        log.warning("faiss.train_size %d is below the %d training vectors %r needs (FAISS's %d "
                    "per centroid x %d centroids): the clusters will be poor; leave "
                    "faiss.train_size out to train on what the factory needs",
                    config.train_size, needed, config.factory, min_points_per_centroid(),
                    max(kmeans_centroids(index)))


def train_size(config: FaissConfig, index: Any) -> int:
    """The training sample's size: the spec's ``faiss.train_size``, or by default
    :data:`DEFAULT_TRAIN_SIZE` raised to what the factory needs."""
    if config.train_size is not None:
        return config.train_size
    return max(DEFAULT_TRAIN_SIZE, training_points_needed(index))


def training_points_needed(index: Any) -> int:
    """Vectors FAISS asks for to train ``index``: its minimum per centroid times the centroids
    of the largest k-means the index runs; 0 for an index that is not trained."""
    return min_points_per_centroid() * max(kmeans_centroids(index), default=0)


def min_points_per_centroid() -> int:
    """FAISS's own threshold below which k-means warns (39 in FAISS 1.x), read from FAISS."""
    import faiss

    return int(faiss.ClusteringParameters().min_points_per_centroid)


def kmeans_centroids(index: Any) -> list[int]:
    """The centroids of each k-means that training ``index`` runs: IVF lists (and a trained
    coarse quantizer's own), PQ codebooks (``2**nbits`` each), an OPQ rotation's PQ."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        steps: Any = index.chain  # a SWIG vector (faiss's stubs call it a list)
        chain = [faiss.downcast_VectorTransform(steps.at(i)) for i in range(steps.size())]
        # OPQMatrix::train fits an 8-bit PQ of its own (256 centroids) to learn the rotation.
        return ([1 << 8 for step in chain if isinstance(step, faiss.OPQMatrix)]
                + kmeans_centroids(index.index))
    if isinstance(index, faiss.IndexRefine):
        return kmeans_centroids(index.base_index) + kmeans_centroids(index.refine_index)
    found = []
    if isinstance(index, faiss.IndexIVF):
        found.append(int(index.nlist))
        if not index.quantizer.is_trained:
            found += kmeans_centroids(index.quantizer)
    pq = getattr(index, "pq", None)
    if pq is not None:
        found.append(int(pq.ksub))
    return found


def train(index: Any, config: FaissConfig, sample: np.ndarray) -> None:
    if index.is_trained:
        return
    try:
        index.train(sample)
    except RuntimeError as err:
        raise InputError(f"FAISS cannot train {config.factory!r} on {len(sample)} vectors: "
                         f"{_faiss_reason(err)}", field="faiss.factory",
                         hint="use Flat or HNSW32 for a small corpus") from None


def configure_search(index: Any, config: FaissConfig) -> None:
    """Set the search breadth an index type understands (nprobe, efSearch)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = config.nprobe
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.hnsw.efSearch = config.ef_search
    refine = faiss.downcast_index(index)
    if isinstance(refine, faiss.IndexRefine):
        refine.k_factor = float(config.k_factor)


def configure_build(index: Any, config: FaissConfig) -> None:
    """Set the build breadth of an HNSW graph (efConstruction) before vectors are added."""
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.hnsw.efConstruction = config.ef_construction


def to_gpus(index: Any, *, every_gpu: bool = True) -> Any:
    """The index on the GPUs (each visible one holds a part of the vectors; ``every_gpu``
    False: GPU 0 alone), or the index itself where FAISS sees no GPU or cannot put this
    index there (a PQ code size the GPU kernels lack, for one): that is logged."""
    import faiss

    if not hasattr(faiss, "GpuMultipleClonerOptions") or faiss.get_num_gpus() == 0:
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True  # float16 IVF-flat vectors and IVF-PQ lookup tables
    try:
        if not every_gpu:
            return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index, options)
        options.shard = True  # the index may exceed one GPU's memory
        return faiss.index_cpu_to_all_gpus(index, co=options)
    except RuntimeError as err:
        log.warning("FAISS cannot put this index on a GPU (%s): using the CPU",
                    _faiss_reason(err))
        return index


def search(index: Any, queries: np.ndarray, k: int, metric: str,
           allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, rows)`` per query; rows are -1 where fewer were found.

    ``allowed_rows`` restricts the search to those rows (a language filter) inside FAISS, so a
    rare language still gets ``k`` results instead of what survives a post-filter.
    """
    k = max(1, min(k, index.ntotal))
    params = None if allowed_rows is None else _filter_params(index, allowed_rows)
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k,
                                params=params)
    if metric == "l2":
        scores = -scores
    return scores, rows


def code_bytes(index: Any) -> int | None:
    """Bytes a vector takes in the index's storage (PQ codes, or the floats), when known."""
    import faiss

    refine = faiss.downcast_index(index)
    if isinstance(refine, faiss.IndexRefine):  # the compressed codes and the re-rank's
        base, finer = code_bytes(refine.base_index), code_bytes(refine.refine_index)
        return None if base is None or finer is None else base + finer
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.code_size)
    size = getattr(faiss.downcast_index(index), "code_size", None)
    return int(size) if size is not None else None


def write_index(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_index(path: Path, *, mmap: bool = False, hint: str | None = None) -> Any:
    """Read a saved index; inverted lists kept on disk (``index.ivfdata``) are found beside
    it and memory-mapped; ``mmap``: map the index file itself rather than read it. A file
    FAISS cannot decode is an input error naming it (``hint``: what to do)."""
    import faiss

    flags = faiss.IO_FLAG_ONDISK_SAME_DIR
    if mmap:
        flags |= faiss.IO_FLAG_MMAP
    try:
        return faiss.read_index(str(path), flags)
    except (RuntimeError, MemoryError) as err:  # a damaged header can ask for any size
        reason = _faiss_reason(err) if isinstance(err, RuntimeError) else "out of memory"
        raise InputError(f"FAISS cannot read the index: {reason}", path=path,
                         hint=hint) from None


def check_factory(factory: str, dimension: int, metric: str) -> None:
    """FAISS can build ``factory`` (an InputError on ``faiss.factory`` if not); cheap: the
    index made is empty."""
    import faiss

    try:
        faiss.index_factory(dimension, factory, faiss_metric(metric))
    except RuntimeError as err:
        raise InputError(f"FAISS cannot build {factory!r}: {_faiss_reason(err)}",
                         field="faiss.factory") from None


def check_read(index: Any, recorded: dict[str, Any], dimension: int, path: Path,
               hint: str) -> None:
    """The index read from ``path`` is the one its manifest describes: the vectors' dimension,
    metric and number (a damaged file can decode into another index)."""
    if index.d != dimension:
        raise InputError(f"holds {index.d}-dimensional vectors, the manifest says {dimension}",
                         path=path, hint=hint)
    if index.metric_type != faiss_metric(recorded["metric"]):
        raise InputError(f"searches with FAISS metric {index.metric_type}, not the manifest's "
                         f"{recorded['metric']!r}", path=path, hint=hint)
    if index.ntotal != recorded["ntotal"]:
        raise InputError(f"holds {index.ntotal} vectors, the manifest's faiss.ntotal says "
                         f"{recorded['ntotal']}", path=path, hint=hint)


def _filter_params(index: Any, allowed_rows: np.ndarray) -> Any:
    import faiss

    # Each index family wants its own parameter type, and its defaults (nprobe=1, efSearch=16)
    # would override the index's own settings, so they are copied over. Fields are set one by
    # one: faiss's stubs do not declare the keyword constructors its Python wrappers add.
    params: faiss.SearchParameters
    refine = faiss.downcast_index(index)
    if isinstance(refine, faiss.IndexRefine):
        # The selector goes to the compressed search; the re-rank keeps its k_factor.
        params = refine_params = faiss.IndexRefineSearchParameters()
        refine_params.k_factor = refine.k_factor
        refine_params.base_index_params = _filter_params(refine.base_index, allowed_rows)
        return refine_params
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params = ivf_params = faiss.SearchParametersIVF()
        ivf_params.nprobe = ivf.nprobe
    elif (hnsw := _hnsw(index)) is not None:
        # faiss 1.15's bundled stubs omit SearchParametersHNSW (it exists at run time).
        params = hnsw_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        hnsw_params.efSearch = hnsw.hnsw.efSearch
    else:
        params = faiss.SearchParameters()
    # faiss (>=1.15) keeps a reference to a SWIG object assigned to a field, so the selector
    # lives as long as the parameters.
    params.sel = faiss.IDSelectorBatch(np.asarray(allowed_rows, dtype=np.int64))
    return params


def _hnsw(index: Any) -> Any:
    """The HNSW index inside ``index`` (itself, or behind a pre-transform), or None."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def _faiss_reason(err: RuntimeError) -> str:
    # FAISS messages start with the C++ location; the reason follows "Error: " (an assertion)
    # or the "at <file>:<line>: " of a thrown error.
    text = str(err).strip()
    if "Error: " in text:
        text = text.split("Error: ", 1)[-1]
    elif located := _THROWN_AT.match(text):
        text = located.group(1)
    return text.splitlines()[0] if text else str(err)


_THROWN_AT = re.compile(r"Error in .*? at \S+:\d+: (.+)", re.DOTALL)
