"""The tour notebooks: they run top to bottom, and the committed copies read well on a code host.

The slow test executes a copy of each notebook (cwd notebooks/, the kernel on this interpreter);
the committed file is never rewritten. Regenerate them with ``python notebooks/_build.py
--execute``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600
MAX_OUTPUT_BYTES = 20_000
MAX_IMAGE_BYTES = 200_000
ABSOLUTE_PATHS = ("/work/", "/home/", "/root/", "/tmp/", "/Users/")
ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")


def load_builder():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOK_DIR / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_committed_notebooks_match_their_generator():
    builder = load_builder()
    assert {p.stem for p in NOTEBOOKS} >= set(builder.NOTEBOOKS), "run notebooks/_build.py"
    for name in builder.NOTEBOOKS:
        committed = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        expected = builder.make_notebook(name)
        got = [(c.id, c.cell_type, c.source) for c in committed.cells]
        want = [(c.id, c.cell_type, c.source) for c in expected.cells]
        assert got == want, (f"{name}.ipynb differs from notebooks/_build.py: edit the cells "
                             "there and run python notebooks/_build.py --execute")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    text = path.read_text(encoding="utf-8")
    for prefix in ABSOLUTE_PATHS:
        assert prefix not in text, f"{path.name} holds an absolute path ({prefix}...)"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, nb.metadata
    for cell in nb.cells:
        assert not cell.metadata, f"{path.name} cell {cell.id}: metadata {dict(cell.metadata)}"
    counts = [cell.execution_count for cell in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)) or set(counts) == {None}, (
        f"{path.name}: execution counts {counts} are not one top-to-bottom run")
    for cell in code_cells(nb):
        for output in cell.outputs:
            where = f"{path.name} cell {cell.id}"
            assert output.output_type != "error", f"{where} saved an error"
            assert not (output.output_type == "stream" and output.name == "stderr"), (
                f"{where} saved stderr: {output.text[:200]!r}")
            images = {k: v for k, v in output.get("data", {}).items() if k.startswith("image/")}
            for kind, data in images.items():
                size = len(base64.b64decode(data)) if kind != "image/svg+xml" else len(data)
                assert size < MAX_IMAGE_BYTES, f"{where}: a {size}-byte {kind}"
            rest = {k: v for k, v in output.items() if k != "data"}
            rest["data"] = {k: v for k, v in output.get("data", {}).items() if k not in images}
            size = len(json.dumps(rest, ensure_ascii=False).encode())
            assert size < MAX_OUTPUT_BYTES, f"{where}: an output of {size} bytes"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)  # a copy in memory: the file stays as committed
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        # The traceback is IPython's, coloured for a terminal; plain text reads better in a log.
        pytest.fail(f"{path.name} failed:\n{ANSI_COLOR.sub('', str(err))}", pytrace=False)
