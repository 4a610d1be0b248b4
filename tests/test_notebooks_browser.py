"""The tour notebooks as a reader sees them: JupyterLab on a free localhost port, over copies
of the saved notebooks (nothing in the repository is written), opened one by one in the
headless Chromium the explorer's test drives; each notebook's first plot is checked on screen
against the saved output (the image's size), and a notebook without a plot has its first table
checked instead."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.helpers import CHROMIUM_MISSING, chromium_path, headless_chromium

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[test]')")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[test]')")
CHROMIUM = chromium_path()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_MISSING)]

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TOKEN = secrets.token_hex(16)
START_TIMEOUT_S = 60
RENDER_TIMEOUT_MS = 30_000
# JupyterLab's news prompt would ask to reach the network and cover the page's corner.
NO_NEWS = '{"fetchNews": "false", "checkForUpdates": false}'


def free_port() -> int:
    """A localhost port nothing listens on now (the server refuses to fall back to another)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lab_env(home: Path) -> dict[str, str]:
    """Jupyter's and IPython's folders under ``home``: no settings, workspaces or kernel history
    of the user's are read or written, and the lab always opens with its defaults."""
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(NO_NEWS, encoding="utf-8")
    return {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython")}


def wait_until_serving(server: subprocess.Popen, url: str, log: Path) -> None:
    """Poll the server's status API until it answers; fail with its log if it exits or stalls."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"jupyter lab did not answer in {START_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[str]:
    """The base URL of a JupyterLab serving copies of the notebooks; stopped afterwards."""
    home = tmp_path_factory.mktemp("lab")
    folder = home / "notebooks"
    folder.mkdir()
    for notebook in NOTEBOOKS:
        shutil.copy2(notebook, folder / notebook.name)
    port, log = free_port(), home / "server.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={folder}",
               "--allow-root"]  # containers run the tests as root
    with log.open("w", encoding="utf-8") as out:
        server = subprocess.Popen(command, env=lab_env(home), stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(server, url, log)
        yield url
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(sync_api) as launched:
        yield launched


def saved_outputs(path: Path) -> list[dict]:
    """Every output of the saved notebook, in order."""
    nb = nbformat.read(path, as_version=4)
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def png_size(output: dict) -> tuple[int, int]:
    """Width and height of an output's PNG, from its IHDR chunk."""
    png = base64.b64decode(output["data"]["image/png"])
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.fixture(scope="module")
def lab_page(browser, lab):
    """The lab in one page (loaded once: opening a notebook from its file browser is quicker
    than loading the whole app again), and the script errors it raises."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{lab}/lab?reset&token={TOKEN}")  # ?reset: the default workspace, nothing open
    listing = page.locator(".jp-DirListing-item")
    listing.first.wait_for(timeout=RENDER_TIMEOUT_MS)
    assert listing.count() == len(NOTEBOOKS)
    yield page, errors
    page.close()


ACTIVE_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
COUNTS = f"""() => {{
    const panel = document.querySelector('{ACTIVE_PANEL}');
    return panel === null ? [0, 0] : [panel.querySelectorAll('.jp-Cell').length,
                                      panel.querySelectorAll('.jp-OutputArea-output').length];
}}"""


def open_notebook(page, path: Path):
    """The panel of ``path``, opened from the file browser, once all its cells and outputs are
    on the page (JupyterLab adds them in batches after the panel shows)."""
    saved = [len(nbformat.read(path, as_version=4).cells), len(saved_outputs(path))]
    page.locator(".jp-DirListing-item", has_text=path.name).dblclick()
    try:
        page.wait_for_function(f"saved => {{ const shown = ({COUNTS})(); "
                               "return shown[0] === saved[0] && shown[1] === saved[1]; }",
                               arg=saved, timeout=RENDER_TIMEOUT_MS)
    except sync_api.TimeoutError:
        shown = page.evaluate(COUNTS)
        pytest.fail(f"{path.name}: JupyterLab shows {shown[0]} cells and {shown[1]} outputs "
                    f"after {RENDER_TIMEOUT_MS // 1000} s; the file holds {saved[0]} and "
                    f"{saved[1]}")
    return page.locator(ACTIVE_PANEL)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_renders_in_jupyterlab_with_its_first_plot(lab_page, path):
    page, errors = lab_page
    outputs = saved_outputs(path)
    plots = [output for output in outputs if "image/png" in output.get("data", {})]
    panel = open_notebook(page, path)
    title = page.locator(".lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel").text_content()
    assert title == path.name
    shown = panel.locator(".jp-OutputArea-output img")
    assert shown.count() == len(plots)
    if plots:
        first = shown.first
        first.scroll_into_view_if_needed()
        box = first.bounding_box()
        natural = first.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        width, height = png_size(plots[0])
        assert tuple(natural) == (width, height)  # the saved PNG, decoded
        assert first.is_visible() and box is not None
        # Shown at the width the cell asked for (Image(width=...)), at the PNG's aspect ratio.
        asked = plots[0].get("metadata", {}).get("image/png", {}).get("width", width)
        assert box["width"] == pytest.approx(asked, abs=0.5)
        assert box["height"] == pytest.approx(asked * height / width, abs=1.0)
    else:  # a notebook without a plot: its first table, with every row the file saved
        html = next((o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})),
                    None)
        assert html is not None, (f"{path.name} holds no plot and no table: saved without "
                                  "outputs? (python notebooks/_build.py --execute)")
        table = panel.locator(".jp-OutputArea-output table").first
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        assert table.is_visible() and box is not None and box["width"] > 0 and box["height"] > 0
        assert table.locator("tr").count() == html.count("<tr")
    assert errors == []
