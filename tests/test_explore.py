"""The run explorer's data and page, on a hand-made run folder (tests/helpers.py): consistency
and filter flags computed by hand, texts escaped, records of another run refused."""

from __future__ import annotations

import html
import json
import re
from importlib import resources

import pytest

from calm_rag.cli import main
from calm_rag.errors import InputError
from calm_rag.explore import FILE_NAME, explorer_data, render_page, write_explorer
from calm_rag.io import write_json, write_jsonl
from calm_rag.runs import open_run
from tests.helpers import HOSTILE, write_explore_run

BLOCKS = re.compile(r'<script type="application/json" id="([a-z0-9-]+)">(.*?)</script>',
                    re.DOTALL)


def page_data(page: str) -> dict:
    """The page's data read back as explorer_data returns it: the index block, and each
    run's details block, one JSON line per question in the index's order."""
    blocks = dict(BLOCKS.findall(page))
    data = json.loads(blocks.pop("explore-data"))
    for run in data["sets"].values():
        lines = blocks.pop(run.pop("block")).split("\n")
        run["details"] = {e["id"]: json.loads(line) for e, line in zip(run["index"], lines,
                                                                        strict=True)}
    assert not blocks, f"blocks of no run: {list(blocks)}"
    return data


@pytest.fixture
def run_folder(tmp_path):
    return write_explore_run(tmp_path / "runs" / "tiny" / "20260101-000000")


def test_index_consistency_and_flags(run_folder):
    index = {e["id"]: e for e in explorer_data(run_folder)["sets"][""]["index"]}
    assert [index[q]["split"] for q in ("q1", "q2", "q3")] == ["train", "train", "heldout"]
    # q1 before: en C, zh A, fr A (1 of 3 pairs agree); after all C.
    assert index["q1"]["consistency"]["zero-shot"] == pytest.approx({"before": 1 / 3,
                                                                      "after": 1.0})
    # q3 with retrieval before: en B, zh unanswered, fr A: the one pair disagrees.
    assert index["q3"]["consistency"]["rag"] == {"before": 0.0, "after": 1.0}
    assert index["q1"]["flags"] == {"zero-shot": ["helped", "disagree", "changed"],
                                    "rag": ["helped", "disagree", "changed"]}
    assert index["q2"]["flags"] == {"zero-shot": [], "rag": []}
    assert index["q3"]["flags"] == {"zero-shot": ["hurt", "changed", "fallback"],
                                    "rag": ["hurt", "disagree", "changed"]}


def test_detail_vote_pairs_passages(run_folder):
    detail = explorer_data(run_folder)["sets"][""]["details"]["q1"]
    vote = detail["votes"]["zero-shot"]
    # Alignment samples: en C C, zh A C, fr A and one unparsed: C 3, A 2.
    assert (vote["answer"], vote["counts"], vote["n_parsed"]) == ("C", {"C": 3, "A": 2}, 5)
    assert vote["by_language"] == {"en": {"C": 2}, "zh": {"A": 1, "C": 1}, "fr": {"A": 1}}
    assert [(p["lang"], p["chosen_answer"], p["rejected_answer"]) for p in detail["pairs"]
            if p["setting"] == "zero-shot"] == [("zh", "C", "A")]
    assert detail["alignment"]["zero-shot"]["zh"][1]["t"] == HOSTILE
    assert detail["retrieved"]["fr"][0]["doc_id"] == "doc-q1"
    assert detail["eval"]["train/before"]["rag"]["zh"][0]["a"] == "C"
    assert detail["gold"] == "C" and set(detail["questions"]) == {"en", "zh", "fr"}


def test_page_keeps_every_text_out_of_the_markup(run_folder):
    data = explorer_data(run_folder)
    page = render_page(data)
    assert "<b>x</b>" not in page and "<img src=x" not in page
    assert page_data(page) == data  # every block ends where it should, and reads back whole
    script = resources.files("calm_rag.explore").joinpath("explore.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere


def test_cli_writes_the_page_by_experiment_name(run_folder, capsys):
    (run_folder.parent / "LATEST").write_text(run_folder.name)
    assert main(["explore", "tiny", "--runs-dir", str(run_folder.parent.parent)]) == 0
    path = run_folder / FILE_NAME
    assert capsys.readouterr().out.strip() == f"{path} ({path.stat().st_size:,} bytes)"
    assert page_data(path.read_text()) == explorer_data(run_folder)


def test_notebook_view_is_the_same_page(run_folder):
    view = open_run(run_folder).explore(height=500)
    srcdoc = re.fullmatch(r'<iframe class="calm-rag-explorer" srcdoc="([^"]*)" '
                          r'style="width:100%;height:500px;border:1px solid #ccc"></iframe>',
                          view._repr_html_())
    assert srcdoc and html.unescape(srcdoc.group(1)) == render_page(explorer_data(run_folder))


def test_language_set_grid_picks_each_set(tmp_path):
    runs = tmp_path / "runs"
    folders = {name: write_explore_run(runs / f"tiny-{name}" / "20260101-000000")
               for name in ("en-zh", "en-fr")}
    grid = runs / "tiny" / "20260101-000001"
    # Stored as the pipeline stores them: relative to where the grid ran.
    write_json(grid / "grid.json", {"language_sets": {
        name: {"folder": f"elsewhere/tiny-{name}/20260101-000000"} for name in folders}})
    data = explorer_data(grid)
    assert list(data["sets"]) == ["en-zh", "en-fr"]
    assert data["sets"]["en-fr"] == explorer_data(folders["en-fr"])["sets"][""]
    (grid.parent / "LATEST").write_text(grid.name)
    assert write_explorer(runs / "tiny") == grid / FILE_NAME  # the experiment's newest


def test_records_of_another_run_are_refused(run_folder):
    write_jsonl(run_folder / "retrieved.jsonl", [{"question_id": "q9", "lang": "en",
                                                  "hits": []}])
    with pytest.raises(InputError, match="question 'q9' is not among the manifest's"):
        explorer_data(run_folder)


def test_a_question_evaluated_in_another_split_is_refused(run_folder):
    write_json(run_folder / "manifest.json", {"questions": {"train": ["q1", "q2", "q3"]}})
    with pytest.raises(InputError, match="question 'q3' of split 'train' evaluated in cell "
                                         "'heldout/before'"):
        explorer_data(run_folder)


def test_cli_error_is_one_line(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "nowhere" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder (no manifest.json)" in err


def test_report_draws_and_links_the_before_after_plots(run_folder):
    from calm_rag.evaluation import write_report
    from calm_rag.io import read_json_object

    grid = read_json_object(run_folder / "metrics.json")
    report = write_report(run_folder, grid, title="t", summary={},
                          recall={"en": (2, 3), "zh": (1, 3)}, recall_k=1).read_text()
    for name in ("consistency_change", "accuracy_change", "agreement_change_heldout_rag",
                 "agreement_change_heldout_zero-shot", "recall"):
        png = run_folder / "plots" / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name
        assert f"](plots/{name}.png)" in report, name
    assert "![Retrieval recall per language](plots/recall.png)" in report
    # Side by side for the cells whose heatmaps the report chose (held-out ones first).
    assert not (run_folder / "plots" / "agreement_change_train_rag.png").exists()
    # Without labels there is no recall plot, and the explorer carries every plot.
    assert "recall.png" not in write_report(run_folder, grid, title="t", summary={}).read_text()
    names = [p["name"] for p in explorer_data(run_folder)["sets"][""]["plots"]]
    assert {"consistency_change", "accuracy_change", "recall"} <= set(names)


@pytest.mark.slow
def test_a_pipeline_run_reads_back_whole(sharp_model, tmp_path):
    """A real run of the tiny model: every record of its files is on the page, in place."""
    from calm_rag.experiment import load_experiment
    from calm_rag.pipeline import run_experiment
    from tests.helpers import experiment, write_experiment

    path = write_experiment(tmp_path, experiment(sharp_model, tmp_path / "runs", data__train=2,
                                                 data__heldout=1, sampling__n=2))
    run = open_run(run_experiment(load_experiment(path), progress=False, source=path).folder)
    data = explorer_data(run.path)["sets"][""]
    details = data["details"]
    assert sorted(details) == sorted(q for ids in run.manifest["questions"].values()
                                     for q in ids)
    for cell, samples in run.eval_cells().items():
        for s in samples:
            rows = details[s.question.id]["eval"][cell][s.setting][s.lang]
            assert {"i": s.index, "a": s.answer, "x": s.extraction, "t": s.text} in rows
    for vote in run.votes():
        assert details[vote.question_id]["votes"][vote.setting]["counts"] == vote.counts
    assert run.votes() and run.pairs()  # the sharp model disagrees with itself across languages
    assert sum(len(d["pairs"]) for d in details.values()) == len(run.pairs())
    for entry in data["index"]:
        for name, cell in run.grid["cells"].items():
            split, phase = name.split("/")
            if split == entry["split"]:
                for setting, by_question in cell["consistency_by_question"].items():
                    assert entry["consistency"][setting][phase] == by_question[entry["id"]]


def test_a_question_worded_differently_in_two_files_is_refused(run_folder):
    path = run_folder / "eval" / "heldout-after.jsonl"
    path.write_text(path.read_text().replace("stem in zh", "another stem in zh"))
    with pytest.raises(InputError, match=r"question 'q3' \(zh\) reads differently here"):
        explorer_data(run_folder)
