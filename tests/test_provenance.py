"""Provenance: digests stay what earlier versions wrote (caches and indexes stay valid), the
file memo never hides a changed file from a check, versions and git state are recorded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from calm_rag.models.home import STAMP_FILE
from calm_rag.runtime import provenance


def test_keys_are_the_ones_earlier_versions_wrote():
    parts = ("sample", 1, {"b": [1, 2], "a": "é"}, Path("x/y"), {3, 1})
    blob = json.dumps(["sample", 1, {"a": "é", "b": [1, 2]}, "x/y", [1, 3]], sort_keys=True,
                      ensure_ascii=False)
    assert provenance.content_key(*parts) == hashlib.sha256(blob.encode()).hexdigest()[:20]
    inputs = {"format": 1, "spec": {"name": "démo"}, "corpus": ["ab"]}
    assert provenance.json_digest(inputs, ascii_only=True) == hashlib.sha256(
        json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def test_file_digest_is_remembered_but_a_check_reads_again(tmp_path):
    path = tmp_path / "index.faiss"
    path.write_bytes(b"abc")
    expected = hashlib.sha256(b"abc").hexdigest()
    assert provenance.file_digest(path) == expected
    stat = path.stat()
    path.write_bytes(b"abd")  # same size; the old mtime put back: the memo cannot tell
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert provenance.file_digest(path) == expected  # remembered for the process
    assert provenance.file_digest(path, remember=False) == hashlib.sha256(b"abd").hexdigest()
    assert provenance.file_entry(path) == {"bytes": 3,
                                           "sha256": hashlib.sha256(b"abd").hexdigest()}


def test_model_fingerprint_follows_the_model_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("notes")
    first = provenance.model_fingerprint(str(tmp_path))
    (tmp_path / "README.md").write_text("other notes")  # not part of the model
    assert provenance.model_fingerprint(str(tmp_path)) == first
    # A prepared model's stamp records how long preparing took: the same weights prepared
    # again are the same model.
    (tmp_path / STAMP_FILE).write_text('{"seconds": 23.6}')
    assert provenance.model_fingerprint(str(tmp_path)) == first
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert provenance.model_fingerprint(str(tmp_path)) != first
    assert provenance.model_fingerprint("owner/name") == "name:owner/name"


def test_texts_and_files_digests_tell_lists_apart(tmp_path):
    assert provenance.texts_digest("k", ["ab", "c"]) != provenance.texts_digest("k", ["a", "bc"])
    one, two = tmp_path / "1.txt", tmp_path / "2.txt"
    one.write_text("ab")
    two.write_text("c")
    first = provenance.files_digest([("1.txt", one), ("2.txt", two)])
    assert first != provenance.files_digest([("2.txt", one), ("1.txt", two)])


def test_versions_and_git_state():
    versions = provenance.package_versions()
    assert "numpy" in versions and set(versions) <= set(provenance.PACKAGES)
    assert provenance.package_versions(["no-such-package-calm-rag"]) == {}
    state = provenance.git_state()
    if state is not None:  # a checkout (not an installed wheel)
        assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)
    assert provenance.git_state("/") is None
