"""PNG plots of the evaluation grid: accuracy, language-pair agreement, retrieval delta.

Figures are built with ``matplotlib.figure.Figure`` and never through pyplot, so no display or
GUI backend is touched (saving a PNG renders with Agg) and a notebook's own pyplot backend is
left alone. matplotlib is imported on first use: it costs a second, and the CLI imports this
package for far less. Each PNG is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calm_rag.evaluation.grid import grid_languages, split_phase
from calm_rag.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SETTING_COLORS = {"zero-shot": "#4c72b0", "rag": "#dd8452"}
HELPED, HURT = "#55a868", "#c44e52"
DPI = 120


def figure(width: float, height: float) -> Figure:
    """A matplotlib figure of that size (no pyplot: no global state, no display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    return path


def cells_by_split(grid: dict) -> dict[str, dict[str, dict]]:
    """``{split: {phase: cell}}`` in the grid's order."""
    splits: dict[str, dict[str, dict]] = {}
    for name, cell in grid["cells"].items():
        split, phase = split_phase(name)
        splits.setdefault(split, {})[phase] = cell
    return splits


def _shades(n: int) -> np.ndarray:
    """Opacity per phase: earlier phases lighter, the last one solid."""
    return np.linspace(0.4, 1.0, n) if n > 1 else np.ones(1)


def _panels(n: int, langs: list[str], bars: int) -> tuple[Figure, np.ndarray]:
    width = max(3.5, 0.5 + 0.18 * max(bars, 1) * max(len(langs), 1))
    fig = figure(width * n, 3.6)
    return fig, fig.subplots(1, n, squeeze=False, sharey=True)[0]


def plot_accuracy(grid: dict, path: str | Path) -> Path:
    """Accuracy per language as grouped bars (phase × setting), one panel per split."""
    splits, langs = cells_by_split(grid), grid_languages(grid)
    most = max(sum(len(c["metrics"]) for c in p.values()) for p in splits.values())
    fig, axes = _panels(len(splits), langs, most)
    x = np.arange(len(langs))
    for ax, (split, phases) in zip(axes, splits.items(), strict=True):
        bars = [(phase, setting) for phase, cell in phases.items() for setting in cell["metrics"]]
        width = 0.8 / max(len(bars), 1)
        shade = dict(zip(phases, _shades(len(phases)), strict=True))
        for i, (phase, setting) in enumerate(bars):
            accuracy = phases[phase]["metrics"][setting]["accuracy"]
            values = [100 * v if (v := accuracy.get(lang, {}).get("value")) is not None
                      else np.nan for lang in langs]
            ax.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, alpha=shade[phase],
                   color=SETTING_COLORS.get(setting, "gray"), label=f"{phase} · {setting}")
        ax.set(title=split, xticks=x, xticklabels=langs, ylim=(0, 100))
    axes[0].set_ylabel("accuracy %")
    _legend(fig, axes)
    return save_figure(fig, path)


def _legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend for all panels, below them, so no bar is hidden."""
    labels: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    fig.legend(list(labels.values()), list(labels.keys()), loc="outside lower center",
               ncols=min(len(labels), 4), fontsize="small", frameon=False)


def plot_agreement(metrics: dict, path: str | Path, title: str) -> Path:
    """Heatmap of the share of questions on which two languages agree, values annotated."""
    langs = metrics["languages"]
    agreement = metrics["agreement"]
    values = np.array([[np.nan if (v := agreement[a][b]) is None else 100 * v for b in langs]
                       for a in langs], dtype=float)
    size = 1.6 + 0.55 * len(langs)
    fig = figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "–" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                fontsize="small", color="black" if v >= 60 else "white")
    ticks = np.arange(len(langs))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=langs, yticklabels=langs, title=title)
    fig.colorbar(image, ax=ax, label="agreement %")
    return save_figure(fig, path)


def has_retrieval_delta(grid: dict) -> bool:
    """Whether any cell was scored both zero-shot and with retrieval."""
    return any(cell.get("retrieval_delta") for cell in grid["cells"].values())


def plot_retrieval_delta(grid: dict, path: str | Path) -> Path:
    """Per language, answers helped (up) and hurt (down) by retrieval, per phase and split."""
    from matplotlib.ticker import MaxNLocator

    if not has_retrieval_delta(grid):
        raise ValueError("no evaluation cell has both zero-shot and rag samples")
    splits = {split: {p: c["retrieval_delta"] for p, c in phases.items() if c["retrieval_delta"]}
              for split, phases in cells_by_split(grid).items()}
    splits = {split: phases for split, phases in splits.items() if phases}
    langs = list(dict.fromkeys(lang for phases in splits.values() for d in phases.values()
                               for lang in d["by_language"]))
    fig, axes = _panels(len(splits), langs, max(len(p) for p in splits.values()))
    x = np.arange(len(langs))
    most = max(max(c["helped"], c["hurt"]) for phases in splits.values()
               for d in phases.values() for c in d["by_language"].values())
    for ax, (split, phases) in zip(axes, splits.items(), strict=True):
        width = 0.8 / len(phases)
        for i, ((phase, delta), shade) in enumerate(zip(phases.items(), _shades(len(phases)),
                                                        strict=True)):
            counts = [delta["by_language"].get(lang, {}) for lang in langs]
            at = x + (i - (len(phases) - 1) / 2) * width
            ax.bar(at, [c.get("helped", 0) for c in counts], width, color=HELPED, alpha=shade,
                   label=f"helped · {phase}")
            ax.bar(at, [-c.get("hurt", 0) for c in counts], width, color=HURT, alpha=shade,
                   label=f"hurt · {phase}")
        ax.axhline(0, color="black", linewidth=0.8)
        limit = 1.1 * max(most, 1)  # symmetric, so helped and hurt compare by height
        ax.set(title=split, xticks=x, xticklabels=langs, ylim=(-limit, limit))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(lambda v, _: f"{abs(v):g}")  # hurt counts drawn below 0
    axes[0].set_ylabel("questions helped ↑ / hurt ↓")
    _legend(fig, axes)
    return save_figure(fig, path)
