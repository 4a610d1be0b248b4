"""PNG plots of the evaluation grid: accuracy, language-pair agreement, retrieval delta, and
before → after alignment (consistency, accuracy per language, agreement), retrieval recall.

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


def _agreement_values(metrics: dict) -> np.ndarray:
    langs, agreement = metrics["languages"], metrics["agreement"]
    return np.array([[np.nan if (v := agreement[a][b]) is None else 100 * v for b in langs]
                     for a in langs], dtype=float)


def _heatmap(ax: Any, metrics: dict, title: str) -> Any:
    """One agreement heatmap on ``ax``, values annotated; return the image (for a colorbar)."""
    langs, values = metrics["languages"], _agreement_values(metrics)
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "–" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                fontsize="small", color="black" if v >= 60 else "white")
    ticks = np.arange(len(langs))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=langs, yticklabels=langs, title=title)
    return image


def plot_agreement(metrics: dict, path: str | Path, title: str) -> Path:
    """Heatmap of the share of questions on which two languages agree, values annotated."""
    size = 1.6 + 0.55 * len(metrics["languages"])
    fig = figure(size + 1.0, size)
    image = _heatmap(fig.subplots(), metrics, title)
    fig.colorbar(image, ax=fig.axes[0], label="agreement %")
    return save_figure(fig, path)


def plot_agreement_change(before: dict, after: dict, path: str | Path, title: str) -> Path:
    """The agreement heatmaps before and after alignment side by side (same languages)."""
    if before["languages"] != after["languages"]:
        raise ValueError(f"before and after differ in languages: {before['languages']} vs "
                         f"{after['languages']}")
    size = 1.6 + 0.55 * len(before["languages"])
    fig = figure(2 * size + 1.0, size + 0.3)
    axes = fig.subplots(1, 2)
    _heatmap(axes[0], before, "before")
    image = _heatmap(axes[1], after, "after")
    fig.colorbar(image, ax=list(axes), label="agreement %")
    fig.suptitle(title)
    return save_figure(fig, path)


def _before_after(ax: Any, labels: list[str], before: list[dict | None],
                  after: list[dict | None]) -> None:
    """Per label, the before and after values (in %) with their 95% intervals, an arrow from
    one to the other; a missing value is left out."""
    x = np.arange(len(labels))
    for offset, phase, stats, shade in ((-0.12, "before", before, 0.45),
                                        (0.12, "after", after, 1.0)):
        for i, m in enumerate(stats):
            if m is None or m.get("value") is None:
                continue
            low, high = m.get("ci95") or (None, None)
            value = 100 * m["value"]
            err = ([[value - 100 * low], [100 * high - value]] if low is not None
                   and high is not None else None)
            ax.errorbar(x[i] + offset, value, yerr=err, fmt="o", capsize=3, color="#4c72b0",
                        alpha=shade, label=phase if i == 0 else None)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        if b and a and b.get("value") is not None and a.get("value") is not None:
            ax.annotate("", xy=(x[i] + 0.12, 100 * a["value"]),
                        xytext=(x[i] - 0.12, 100 * b["value"]),
                        arrowprops={"arrowstyle": "->", "color": "gray"})
    ax.set(xticks=x, xticklabels=labels, ylim=(-5, 105), xlim=(-0.6, len(labels) - 0.4))


def has_consistency_change(grid: dict) -> bool:
    """Whether some split was evaluated both before and after alignment."""
    return any(grid.get("consistency_change", {}).values())


def plot_consistency_change(grid: dict, path: str | Path) -> Path:
    """Cross-lingual consistency before → after alignment with 95% intervals: one panel per
    split, the settings side by side."""
    change = {split: s for split, s in grid["consistency_change"].items() if s}
    if not change:
        raise ValueError("no split was evaluated both before and after alignment")
    fig = figure(max(3.5, 1.6 + 1.2 * max(len(s) for s in change.values())) * len(change), 3.4)
    axes = fig.subplots(1, len(change), squeeze=False, sharey=True)[0]
    for ax, (split, settings) in zip(axes, change.items(), strict=True):
        _before_after(ax, list(settings), [c["before"] for c in settings.values()],
                      [c["after"] for c in settings.values()])
        ax.set_title(split)
    axes[0].set_ylabel("consistency %")
    _legend(fig, axes)
    return save_figure(fig, path)


def before_after_pairs(grid: dict) -> list[tuple[str, str, str]]:
    """(split, before cell, after cell) for each split scored before and after alignment."""
    return [(split, f"{split}/before", f"{split}/after")
            for split, phases in cells_by_split(grid).items()
            if "before" in phases and "after" in phases]


def plot_accuracy_change(grid: dict, path: str | Path) -> Path:
    """Accuracy per language before → after alignment with 95% intervals: one panel per
    split and setting."""
    panels = [(split, setting, grid["cells"][b]["metrics"][setting]["accuracy"],
               grid["cells"][a]["metrics"][setting]["accuracy"])
              for split, b, a in before_after_pairs(grid)
              for setting in grid["cells"][b]["metrics"]
              if setting in grid["cells"][a]["metrics"]]
    if not panels:
        raise ValueError("no cell was scored both before and after alignment")
    langs = grid_languages(grid)
    fig = figure(max(3.2, 1.0 + 0.55 * len(langs)) * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (split, setting, before, after) in zip(axes, panels, strict=True):
        _before_after(ax, langs, [before.get(x) for x in langs], [after.get(x) for x in langs])
        ax.set_title(f"{split} · {setting}")
    axes[0].set_ylabel("accuracy %")
    _legend(fig, axes)
    return save_figure(fig, path)


def plot_recall(recall: dict[str, tuple[int, int]], path: str | Path, k: int | None = None
                ) -> Path:
    """Retrieval recall per query language: the share of questions with a relevant passage
    among the hits, each bar labelled found/asked."""
    langs = [lang for lang, (_, asked) in recall.items() if asked]
    if not langs:
        raise ValueError("no question with relevance labels was retrieved for")
    values = [100 * recall[x][0] / recall[x][1] for x in langs]
    fig = figure(max(3.2, 1.2 + 0.6 * len(langs)), 3.2)
    ax = fig.subplots()
    bars = ax.bar(np.arange(len(langs)), values, color=SETTING_COLORS["rag"])
    ax.bar_label(bars, [f"{recall[x][0]}/{recall[x][1]}" for x in langs], fontsize="small")
    ax.set(xticks=np.arange(len(langs)), xticklabels=langs, ylim=(0, 110),
           ylabel=f"recall@{k} %" if k else "recall %", title="Retrieval recall per language")
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
