"""Reading a finished run back: open_run by folder or name, records, frames, clear errors.

The run is a real one, made by the pipeline on the tiny model of tests/sharp_model.py (two
alignment rounds, so round-1/ exists too); it takes seconds.
"""

from __future__ import annotations

import pytest

from calm_rag.errors import InputError
from calm_rag.experiment import Experiment, load_experiment
from calm_rag.pipeline import run_experiment
from calm_rag.records import PreferencePair, Sample, Vote
from calm_rag.runs import COLUMNS, latest_run, open_run, samples_frame
from tests.helpers import experiment, write_experiment


@pytest.fixture(scope="module")
def finished(sharp_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    path = write_experiment(root, experiment(sharp_model, root / "runs", align__rounds=2))
    return run_experiment(load_experiment(path), progress=False, source=path)


def test_open_by_name_folder_or_path(finished):
    runs = finished.folder.parent.parent
    assert latest_run("tiny", runs) == finished.folder
    for how in (open_run("tiny", runs_dir=runs), open_run(runs / "tiny"),
                open_run(finished.folder)):
        assert how.path == finished.folder and how.name == "tiny"


def test_records_read_back(finished):
    run = open_run(finished.folder)
    assert isinstance(run.config, Experiment) and run.config.align.rounds == 2
    assert run.manifest["experiment"] == "tiny"
    assert run.grid == finished.grid
    last = finished.rounds[-1]
    assert run.samples() == last.samples
    assert run.votes() == last.votes and all(isinstance(v, Vote) for v in run.votes())
    assert run.pairs() == last.pairs
    assert all(isinstance(p, PreferencePair) for p in run.pairs())
    assert run.samples(round=1) == finished.rounds[0].samples
    assert run.samples(round=2) == last.samples
    with pytest.raises(InputError, match="no round 3: this run has rounds 1 to 2"):
        run.samples(round=3)


def test_eval_cells_and_frames(finished):
    run = open_run(finished.folder)
    cells = run.eval_cells()
    assert list(cells) == list(finished.grid["cells"])
    assert set(cells) == {"train/before", "heldout/before", "train/after", "heldout/after"}
    assert all(isinstance(s, Sample) for samples in cells.values() for s in samples)
    frame = samples_frame(cells["heldout/after"])
    assert list(frame.columns) == COLUMNS and len(frame) == len(cells["heldout/after"])
    assert (frame.correct == (frame.answer == frame.gold)).all()
    everything = run.eval_frame()
    assert list(everything.columns) == ["split", "phase", *COLUMNS]
    assert len(everything) == sum(len(s) for s in cells.values())
    assert set(zip(everything.split, everything.phase, strict=True)) == {
        tuple(cell.split("/")) for cell in cells}


def test_empty_pairs_file_reads_as_no_pairs(finished, tmp_path):
    import shutil

    copy = shutil.copytree(finished.folder, tmp_path / "run")
    (copy / "pairs.jsonl").write_text("")
    assert open_run(copy).pairs() == []


def test_missing_runs_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="no finished run of experiment 'demo'") as err:
        open_run("demo", runs_dir=tmp_path)
    assert str(tmp_path / "demo" / "LATEST") in str(err.value)
    assert "calm-rag run pipelines/demo.yaml" in str(err.value)
    with pytest.raises(InputError, match="not a run folder"):
        open_run(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "LATEST").write_text("20240101-000000\n")
    with pytest.raises(InputError, match="LATEST names '20240101-000000', which is missing"):
        open_run("demo", runs_dir=tmp_path)


def test_samples_frame_without_gold():
    from tests.helpers import make_samples

    frame = samples_frame(make_samples({"en": ["A", None]}, gold=None))
    assert frame.correct.isna().all() and frame.gold.isna().all()
    assert list(frame.extraction) == ["marker_letter", "none"]
