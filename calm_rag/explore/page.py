"""The explorer page: one self-contained HTML file (data, script and style inline; no server,
no network), and its view in a notebook.

Text from a model, a corpus or a file never becomes markup: the data sits in
``<script type="application/json">`` blocks with ``<``, ``>`` and ``&`` written as ``\\u003c``
etc. (a sample holding ``</script>`` cannot end the block), and the script puts every text on
the page through ``textContent``.

The first block holds the header, plots and questions index of each run (each language set of
a grid); each run's question details follow in a block of their own, one JSON line per
question in the index's order. The page parses the first block at load and a question's line
only when the question is opened: a 10,000-question run is never parsed whole.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from calm_rag.explore.data import explorer_data, resolve_folder
from calm_rag.io import atomic_write

FILE_NAME = "explore.html"
SLOTS = re.compile(r"\{\{(TITLE|STYLE|SCRIPT|DATA|DETAILS)\}\}")
JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _asset(name: str) -> str:
    return resources.files("calm_rag.explore").joinpath(name).read_text(encoding="utf-8")


def embedded_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` block: no ``<``, ``>`` or ``&`` left as such (JSON
    reads ``\\u003c`` back as ``<``)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r"[<>&]", lambda m: JSON_ESCAPES[m.group()], text)


def render_page(data: dict[str, Any]) -> str:
    """The whole page for :func:`calm_rag.explore.data.explorer_data`'s dict."""
    index = {"title": data["title"],
             "sets": {name: {**{k: v for k, v in run.items() if k != "details"},
                             "block": f"explore-details-{i}"}
                      for i, (name, run) in enumerate(data["sets"].items())}}
    blocks = [details_block(index["sets"][name]["block"], run)
              for name, run in data["sets"].items()]
    slots = {"TITLE": html.escape(data["title"]), "STYLE": _asset("explore.css"),
             "SCRIPT": _asset("explore.js"), "DATA": embedded_json(index),
             "DETAILS": "\n".join(blocks)}
    # One pass: a slot's text is never searched for further slots.
    return SLOTS.sub(lambda m: slots[m.group(1)], _asset("explore.html.template"))


def details_block(block_id: str, run: dict[str, Any]) -> str:
    """A run's question details, one JSON line each in the index's order (a JSON text holds
    no raw newline, so a line is a question)."""
    details = run["details"]
    lines = "\n".join(embedded_json(details[entry["id"]]) for entry in run["index"])
    return f'<script type="application/json" id="{block_id}">{lines}</script>'


def write_explorer(path_or_name: str | Path, runs_dir: str | Path = "runs",
                   out: str | Path | None = None) -> Path:
    """Write the explorer of a run (or language-set grid) folder, by default as
    ``<folder>/explore.html``; return its path."""
    folder = resolve_folder(path_or_name, runs_dir)
    page = render_page(explorer_data(folder))
    path = Path(out) if out is not None else folder / FILE_NAME
    with atomic_write(path) as handle:
        handle.write(page)
    return path


class ExplorerView:
    """The explorer in a notebook: the page in an iframe (``srcdoc``), so its script and
    style stay apart from the notebook's."""

    def __init__(self, folder: str | Path, height: int = 720) -> None:
        self.folder = resolve_folder(folder)
        self.height = height
        self.page = render_page(explorer_data(self.folder))

    def __repr__(self) -> str:
        # The folder's own name only: a saved notebook names no one's absolute paths.
        return (f"ExplorerView(run folder {self.folder.name}: a page of "
                f"{len(self.page):,} characters)")

    def _repr_html_(self) -> str:
        return (f'<iframe class="calm-rag-explorer" srcdoc="{html.escape(self.page)}" '
                f'style="width:100%;height:{int(self.height)}px;border:1px solid #ccc">'
                "</iframe>")
