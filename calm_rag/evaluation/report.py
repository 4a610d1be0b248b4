"""``report.md`` with its PNG plots: the evaluation grid of a run, readable on GitHub.

All links are relative to the report's folder, so a run folder can be moved or shared whole.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from calm_rag.evaluation.delta import CLASSES
from calm_rag.evaluation.grid import (
    UNANSWERED,
    answered_share,
    fallback_warnings,
    format_grid_table,
    grid_languages,
)
from calm_rag.evaluation.plots import (
    before_after_pairs,
    has_consistency_change,
    has_retrieval_delta,
    plot_accuracy,
    plot_accuracy_change,
    plot_agreement,
    plot_agreement_change,
    plot_consistency_change,
    plot_recall,
    plot_retrieval_delta,
)
from calm_rag.evaluation.tables import pct, rankc_section, with_ci, with_ci_number
from calm_rag.io import atomic_write

log = logging.getLogger(__name__)

MAX_HEATMAPS = 4
# Which agreement heatmaps to draw first: held-out questions, after alignment, with retrieval.
RANK = {"heldout": 0, "train": 1, "after": 0, "before": 1, "rag": 0, "zero-shot": 1}

GRID_LEGEND = ("All numbers in %. Accuracy is per sample (unanswered counts as wrong). "
               "Consistency is CALM's cross-lingual consistency: the share of language pairs "
               "giving the same answer, averaged over questions, with a 95% bootstrap interval. "
               "Answered: samples with an answer by any method; in parentheses, those answered "
               "by the log-prob fallback.")


def write_report(folder: str | Path, grid: dict, *, title: str, summary: dict[str, str],
                 training: dict | None = None, votes: dict | None = None,
                 recall: dict[str, tuple[int, int]] | None = None,
                 recall_k: int | None = None) -> Path:
    """Write ``folder/plots/*.png`` and ``folder/report.md``; return the report's path.
    ``votes`` is the last round's :func:`calm_rag.evaluation.votes.vote_summary`; ``recall``
    per query language ``(found, asked)`` at ``recall_k`` (where relevance labels exist)."""
    folder = Path(folder)
    plots = write_plots(folder, grid) + before_after_plots(folder, grid)
    if recall and any(asked for _, asked in recall.values()):
        plot_recall(recall, folder / "plots" / "recall.png", recall_k)
        plots.append(("Retrieval recall per language", "plots/recall.png"))
    sections = [
        f"# {title}",
        "\n".join(f"- **{key}**: {portable_text(value, folder)}" for key, value in summary.items()),
        fallback_section(grid),
        f"## Results\n\n{format_grid_table(grid)}\n\n{GRID_LEGEND}",
        consistency_section(grid),
        agreement_section(grid),
        rankc_section(grid),
        extraction_section(grid),
        delta_section(grid),
        plots_section(plots),
        vote_section(votes) if votes else "",
        chosen_language_section(votes) if votes else "",
        training_section(training, folder) if training else "",
    ]
    path = folder / "report.md"
    with atomic_write(path) as handle:
        handle.write("\n\n".join(s for s in sections if s) + "\n")
    return path


def agreement_choices(grid: dict, limit: int = MAX_HEATMAPS) -> list[tuple[str, str]]:
    """The (cell, setting) pairs whose agreement heatmap the report shows, in grid order."""
    pairs = [(name, setting) for name, cell in grid["cells"].items()
             for setting in cell["metrics"]]

    def rank(pair: tuple[str, str]) -> tuple[int, ...]:
        split, phase = pair[0].split("/", 1)
        return tuple(RANK.get(part, len(RANK)) for part in (split, phase, pair[1]))

    chosen = set(sorted(pairs, key=rank)[:limit])
    return [pair for pair in pairs if pair in chosen]


def write_plots(folder: Path, grid: dict) -> list[tuple[str, str]]:
    """Render the plots into ``folder/plots``; return (caption, relative link) pairs."""
    plots, written = folder / "plots", []
    if grid_languages(grid):  # a grid of empty cells has nothing to draw
        written.append(("Accuracy per language, before and after alignment", "accuracy.png"))
        plot_accuracy(grid, plots / written[-1][1])
    if has_retrieval_delta(grid):
        written.append(("Retrieval delta: answers helped and hurt per language",
                        "retrieval_delta.png"))
        plot_retrieval_delta(grid, plots / written[-1][1])
    for name, setting in agreement_choices(grid):
        caption = f"Language-pair agreement, {name} · {setting}"
        file = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"agreement_{name}_{setting}") + ".png"
        plot_agreement(grid["cells"][name]["metrics"][setting], plots / file,
                       f"Agreement % — {name} · {setting}")
        written.append((caption, file))
    return [(caption, f"plots/{file}") for caption, file in written]


def _file_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) + ".png"


def before_after_plots(folder: Path, grid: dict) -> list[tuple[str, str]]:
    """Before → after alignment: consistency with intervals per setting, accuracy per
    language, and the agreement heatmaps side by side (the report's choice of cells);
    return (caption, relative link) pairs."""
    plots, written = folder / "plots", []
    if has_consistency_change(grid):
        written.append(("Consistency before → after alignment, 95% intervals",
                        "consistency_change.png"))
        plot_consistency_change(grid, plots / written[-1][1])
    pairs = before_after_pairs(grid)
    if pairs and grid_languages(grid):
        written.append(("Accuracy per language before → after alignment, 95% intervals",
                        "accuracy_change.png"))
        plot_accuracy_change(grid, plots / written[-1][1])
    shown = {(name.split("/", 1)[0], setting) for name, setting in agreement_choices(grid)}
    for split, before, after in pairs:
        for setting in grid["cells"][before]["metrics"]:
            if (split, setting) not in shown or setting not in grid["cells"][after]["metrics"]:
                continue
            langs = [grid["cells"][c]["metrics"][setting]["languages"] for c in (before, after)]
            if langs[0] != langs[1]:  # side by side only where the same rows and columns
                log.warning(f"report: no agreement before/after plot for {split} · {setting}: "
                            f"languages differ ({langs[0]} vs {langs[1]})")
                continue
            file = _file_name(f"agreement_change_{split}_{setting}")
            plot_agreement_change(grid["cells"][before]["metrics"][setting],
                                  grid["cells"][after]["metrics"][setting], plots / file,
                                  f"Agreement % — {split} · {setting}")
            written.append((f"Language-pair agreement before → after, {split} · {setting}",
                            file))
    return [(caption, f"plots/{file}") for caption, file in written]


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def consistency_section(grid: dict) -> str:
    """Consistency before and after alignment per split and setting, with intervals."""
    rows = []
    for split, settings in grid["consistency_change"].items():
        for setting, c in settings.items():
            change = c["change"]
            low, high = change["ci95"]
            interval = "" if low is None else f" [{_signed(low)}, {_signed(high)}]"
            rows.append([split, setting, with_ci(c["before"]), with_ci(c["after"]),
                         _signed(change["value"]) + interval, str(change["n"])])
    head = "## Consistency before → after"
    if not rows:
        return f"{head}\n\nNo split was evaluated both before and after alignment."
    note = ("Cross-lingual consistency in % [95% CI]. The change is paired: the mean over "
            "questions answered in two or more languages in both phases of (after − before), "
            "in percentage points.")
    header = ["split", "setting", "before", "after", "change (points)", "questions paired"]
    return f"{head}\n\n{note}\n\n{_table(header, rows)}"


def agreement_section(grid: dict) -> str:
    """Per cell and setting: CALM's consistency, Krippendorff's alpha and answer entropy."""
    rows = [[name, setting, with_ci(m["consistency"]),
             with_ci_number(m.get("krippendorff_alpha")),
             with_ci_number(m.get("answer_entropy"), 2)]
            for name, cell in grid["cells"].items() for setting, m in cell["metrics"].items()]
    if not rows:
        return ""
    note = ("Consistency (%) is CALM's share of agreeing language pairs. Krippendorff's alpha "
            "takes languages as raters of nominal answers: 1 is full agreement, 0 agreement at "
            "chance. Answer entropy is the entropy in bits of the languages' answers to a "
            "question, averaged (0: all agree). 95% bootstrap intervals over questions.")
    header = ["cell", "setting", "consistency %", "Krippendorff's alpha", "entropy (bits)"]
    return f"## Agreement across languages\n\n{note}\n\n{_table(header, rows)}"


def fallback_section(grid: dict) -> str:
    """A visible warning per cell whose answers came mostly from the log-prob fallback (also
    logged, so that a run's console shows it)."""
    lines = fallback_warnings(grid)
    for line in lines:
        log.warning(f"report: {line}")
    return "\n\n".join(f"> **Warning**: {line}" for line in lines)


def extraction_section(grid: dict) -> str:
    """How the answers were obtained: share of samples per extraction method."""
    cells = grid["cells"]
    seen = dict.fromkeys(m for c in cells.values() for s in c["extraction"].values() for m in s)
    # Extractors first, then the fallback, then the unanswered.
    last = ["logprob", *UNANSWERED]
    methods = [m for m in seen if m not in last] + [m for m in last if m in seen]
    rows = [[name, setting, pct(answered_share(shares))]
            + [pct(shares.get(m, 0.0)) for m in methods]
            for name, cell in cells.items() for setting, shares in cell["extraction"].items()]
    note = ("Share of samples (%) whose answer each method gave: the extractors in order, "
            "`logprob` the log-probability fallback, `none` no answer.")
    table = _table(["cell", "setting", "answered", *methods], rows)
    return f"## How answers were obtained\n\n{note}\n\n{table}"


def _count(n: int, total: int) -> str:
    return f"{n} ({pct(n / total) if total else 'n/a'}%)"


def _net(n: int) -> str:
    return f"{n:+d}" if n else "0"


def delta_section(grid: dict) -> str:
    """Helped / hurt / changed / unchanged per language, for cells with both settings."""
    rows, without_gold = [], []
    for name, cell in grid["cells"].items():
        delta = cell.get("retrieval_delta")
        if not delta:
            continue
        groups = [*delta["by_language"].items(), ("all", {**delta["overall"], "n": delta["n"]})]
        for lang, counts in groups:
            rows.append([name, lang, str(counts["n"])]
                        + [_count(counts[c], counts["n"]) for c in CLASSES]
                        + [_net(counts["helped"] - counts["hurt"])])
        if delta["without_gold"]:
            without_gold.append(f"{name}: {delta['without_gold']}")
    if not rows:
        return ""
    note = ("Per question and language, the language's majority answer zero-shot against with "
            "retrieval: helped = wrong or unanswered → right, hurt = right → wrong or "
            "unanswered, changed = another answer, right neither time. Net = helped − hurt.")
    if without_gold:
        note += (" Question-languages without a gold answer (only changed / unchanged): "
                 + "; ".join(without_gold) + ".")
    table = _table(["cell", "language", "compared", *CLASSES, "net"], rows)
    return f"## Retrieval delta\n\n{note}\n\n{table}"


def plots_section(plots: list[tuple[str, str]]) -> str:
    if not plots:
        return ""
    return "## Plots\n\n" + "\n\n".join(f"![{caption}]({link})" for caption, link in plots)


def _relative(path: str | Path, folder: Path) -> str:
    """A link to ``path`` from inside ``folder``.

    A relative path naming a file inside ``folder`` (or one that exists nowhere yet) is taken as
    already relative to it; any other path is made relative to it.
    """
    path = Path(path)
    inside = not path.is_absolute() and ((folder / path).exists() or not path.exists())
    if not inside:
        path = Path(os.path.relpath(path.resolve(), folder.resolve()))
    return path.as_posix()


def portable_text(value: object, folder: Path) -> str:
    """A value for the report with every absolute path in it (a model, ``model + adapter
    path``, a data folder) made relative to the run folder (home-relative, ``~/...``, when
    they share no folder but the root), so the report names no one's absolute paths."""
    return _ABSOLUTE.sub(lambda found: _portable(found.group(0), folder), str(value))


# An absolute path inside a value: from a "/" that starts the text or follows a space or a
# bracket, up to the next space, comma, colon, semicolon or bracket.
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s(\[]))/[^\s,;:()\[\]]*")


def _portable(text: str, folder: Path) -> str:
    path, home, here = Path(text).resolve(), Path.home().resolve(), folder.resolve()
    if path.is_relative_to(here):
        return path.relative_to(here).as_posix() or "."
    if os.path.commonpath([path, here]) != here.anchor:  # e.g. the cache beside the runs
        return Path(os.path.relpath(path, here)).as_posix()
    if path.is_relative_to(home):
        return f"~/{path.relative_to(home).as_posix()}"
    return Path(os.path.relpath(path, here)).as_posix()  # nothing shared: still no root path


def _value(key: str, value: object, folder: Path) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if "loss" in key else f"{value:.1f}"
    return portable_text(value, folder)


def vote_section(votes: dict) -> str:
    """The vote that made the training targets: how many questions got one, how many tied."""
    voted = votes["questions_voted"]
    lines = [f"- **policy**: {votes['policy']} (ties: {votes['tie']})",
             f"- **questions voted**: {voted}, given a target: {_count(votes['targets'], voted)}",
             f"- **tied**: {_count(votes['ties'], voted)}, of which dropped: "
             f"{votes['ties_dropped']}",
             f"- **abstained** (below min_agreement): {votes['abstained']}",
             f"- **pairs**: {votes['pairs']}"]
    text = "## Vote\n\n" + "\n".join(lines)
    for setting, weights in votes.get("language_weights", {}).items():
        rows = [[lang, f"{weight:.3f}"] for lang, weight in weights.items()]
        text += f"\n\nLanguage weights ({setting}):\n\n" + _table(["language", "weight"], rows)
    return text


def chosen_language_section(votes: dict) -> str:
    """Per prompt language: the share of pair rows whose chosen text is in that language
    (the language identifier's verdict) and where the chosen texts came from."""
    from calm_rag.evaluation.chosen_language import SOURCES

    shares = votes.get("chosen_language")
    if not shares:
        return ""
    rows = [[lang, str(c["pairs"]), _count(c["in_language"], c["pairs"])]
            + [str(c["sources"].get(name, 0)) for name in SOURCES]
            for lang, c in shares.items()]
    pairs = sum(c["pairs"] for c in shares.values())
    in_language = sum(c["in_language"] for c in shares.values())
    rows.append(["all", str(pairs), _count(in_language, pairs)]
                + [str(sum(c["sources"].get(name, 0) for c in shares.values()))
                   for name in SOURCES])
    note = (f"Chosen fallback: {votes.get('chosen_fallback', 'n/a')}. Per prompt language, "
            "the pair rows whose `chosen` text the language identifier (py3langid; the "
            "script for CJK) finds in the prompt's language, and where the chosen texts came "
            "from: the language's own agreeing response, the pivot's, or a regenerated one.")
    header = ["language", "pairs", "chosen in language", *SOURCES]
    return f"## Chosen responses in the prompt's language\n\n{note}\n\n{_table(header, rows)}"


def training_section(training: dict, folder: Path) -> str:
    """The alignment run: method, rows, seconds, final loss (any other scalar too), loss plot."""
    lines = [f"- **{key.replace('_', ' ')}**: {_value(key, value, folder)}"
             for key, value in training.items()
             if key != "loss_plot" and isinstance(value, str | int | float | Path | None)]
    text = "## Training\n\n" + "\n".join(lines)
    if training.get("loss_plot"):
        text += f"\n\n![Training loss]({_relative(training['loss_plot'], folder)})"
    return text
