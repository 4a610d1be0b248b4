"""The explorer in a real browser: headless Chromium (Debian's ``chromium``, which ``make
test`` installs when absent) driven by playwright through its executable path, on the
hand-made run of tests/helpers.py; what the page shows is checked against the run's files."""

from __future__ import annotations

import os

import pytest

from calm_rag.datasets.samples import read_samples
from calm_rag.explore import write_explorer
from tests.helpers import (
    CHROMIUM_MISSING,
    HOSTILE,
    chromium_path,
    headless_chromium,
    write_explore_run,
)

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_MISSING)


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(sync_api) as launched:
        yield launched


def rows(page) -> list[str]:
    return page.eval_on_selector_all("#rows tr", "trs => trs.map(tr => tr.dataset.qid)")


def test_filters_sorting_and_a_question_against_the_files(browser, tmp_path):
    folder = write_explore_run(tmp_path / "run")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(write_explorer(folder).as_uri())
    assert page.text_content("#count") == "3 of 3 questions" and rows(page) == ["q1", "q2", "q3"]

    page.check("#f-hurt")  # retrieval made q3's en answer wrong
    assert rows(page) == ["q3"]
    page.uncheck("#f-hurt")
    page.check("#f-disagree")  # zero-shot before: only q1's languages disagree
    assert rows(page) == ["q1"]
    page.select_option("#setting", "rag")  # with retrieval q3's languages disagree too
    assert rows(page) == ["q1", "q3"] and page.text_content("#count") == "2 of 3 questions"
    page.uncheck("#f-disagree")
    page.click("#sort-before")  # rag before: q3 0.0, q1 33.3, q2 100.0
    assert rows(page) == ["q3", "q1", "q2"]
    page.click("#sort-before")
    assert rows(page) == ["q2", "q1", "q3"]

    page.click("#rows tr[data-qid=q1]")
    assert page.text_content("#q-title") == "q1 (train)"
    assert page.text_content("#q-gold") == "gold: C"
    for cell in ("train/before", "train/after"):
        samples = read_samples(folder / "eval" / f"{cell.replace('/', '-')}.jsonl")
        for s in samples:
            if s.question.id == "q1" and s.setting == "rag":
                shown = page.eval_on_selector(
                    f'#eval-table td[data-lang="{s.lang}"][data-cell="{cell}"]',
                    "td => td.firstChild.textContent")
                assert shown == (s.answer or "—"), (cell, s.lang)
    assert page.text_content("#vote-line").startswith("target C · majority · 5 of 6")

    zh = page.locator('details.samples[data-lang="zh"]')
    zh.locator("summary").click()
    assert zh.locator("pre").nth(1).text_content() == HOSTILE  # shown as text
    assert page.locator("#detail b").count() == 0 and page.locator("#detail img").count() == 0
    passages = page.locator('details.passages[data-lang="en"]')
    passages.locator("summary").click()
    assert passages.locator("td.passage").text_content().startswith("<img src=x")
    shot = os.environ.get("CALM_RAG_EXPLORE_SCREENSHOT")  # for docs/explore.png, on demand
    if shot:
        page.screenshot(path=shot)
    assert errors == []


def test_a_language_set_grid_switches_sets(browser, tmp_path):
    from calm_rag.io import write_json

    runs = tmp_path / "runs"
    for name in ("en-zh", "en-fr"):
        write_explore_run(runs / f"tiny-{name}" / "20260101-000000")
    # The second set's q2 stem differs, so the page must show the picked set's own texts.
    for file in (runs / "tiny-en-fr" / "20260101-000000").rglob("*.jsonl"):
        file.write_text(file.read_text().replace("stem in en", "stem of en-fr in en"))
    grid = runs / "tiny" / "20260101-000001"
    write_json(grid / "grid.json", {"language_sets": {
        name: {"folder": f"runs/tiny-{name}/20260101-000000"} for name in ("en-zh", "en-fr")}})
    page = browser.new_page()
    page.goto(write_explorer(grid).as_uri())
    page.click("#rows tr[data-qid=q2]")
    assert page.locator(".question[data-lang=en] .stem").text_content() == "stem in en"
    page.select_option("#set", "en-fr")
    assert page.text_content("#detail") == ""  # a new set: nothing open
    page.click("#rows tr[data-qid=q2]")
    assert page.locator(".question[data-lang=en] .stem").text_content() == "stem of en-fr in en"


def test_the_notebook_view_shows_the_same_page(browser, tmp_path):
    from calm_rag.runs import open_run

    folder = write_explore_run(tmp_path / "run")
    page = browser.new_page()
    page.set_content(open_run(folder).explore(height=400)._repr_html_())  # as Jupyter shows it
    frame = page.frame_locator("iframe.calm-rag-explorer")
    assert frame.locator("#count").text_content() == "3 of 3 questions"
    frame.locator("#rows tr[data-qid=q1]").click()
    assert frame.locator("#q-title").text_content() == "q1 (train)"
    zh = frame.locator('details.samples[data-lang="zh"]')
    zh.locator("summary").click()
    assert zh.locator("pre").nth(1).text_content() == HOSTILE
