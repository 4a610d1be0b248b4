"""The run explorer: ``calm-rag explore RUN`` and ``open_run(...).explore()``.

- :mod:`calm_rag.explore.data`: a run folder's files gathered into the page's data.
- :mod:`calm_rag.explore.page`: the self-contained ``explore.html`` and its notebook view;
  the page's template, script and style are package data files beside them.
"""

from calm_rag.explore.data import explorer_data, resolve_folder
from calm_rag.explore.page import FILE_NAME, ExplorerView, render_page, write_explorer

__all__ = ["FILE_NAME", "ExplorerView", "explorer_data", "render_page", "resolve_folder",
           "write_explorer"]
