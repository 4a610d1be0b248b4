"""Markdown tables of metrics, for the terminal, README and reports alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calm_rag.evaluation.calm_consistency import PaperRow


def pct(value: float | None) -> str:
    """A share as a percentage with one decimal ("n/a" for none)."""
    return "n/a" if value is None else f"{100 * value:.1f}"


def with_ci(summary: dict) -> str:
    """A share and its 95% interval as percentages ("61.3 [58.4, 64.4]")."""
    low, high = summary["ci95"]
    if low is None:  # too few questions for an interval
        return pct(summary["value"])
    return f"{pct(summary['value'])} [{pct(low)}, {pct(high)}]"


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def with_ci_number(summary: dict | None, digits: int = 3) -> str:
    """A value that is not a share (alpha, bits) with its interval."""
    if not summary:
        return "n/a"
    low, high = summary["ci95"]
    value = _number(summary["value"], digits)
    return value if low is None else f"{value} [{_number(low, digits)}, {_number(high, digits)}]"


def agreement_lines(m: dict) -> list[str]:
    """Krippendorff's alpha and answer entropy of one setting's metrics, one line each."""
    lines = []
    if "krippendorff_alpha" in m:
        lines.append(f"Krippendorff's alpha (languages as raters): "
                     f"{with_ci_number(m['krippendorff_alpha'])}")
    if "answer_entropy" in m:
        e = m["answer_entropy"]
        lines.append(f"Answer entropy across languages: {with_ci_number(e, 2)} bits "
                     f"(0 = all agree, at most {_number(e.get('max'), 2)})")
    return lines


def rankc_lines(m: dict) -> list[str]:
    """RankC overall and per language pair of one setting's metrics (none without it)."""
    r = m.get("rankc")
    if not r:
        return []
    pairs = ", ".join(f"{pair} {with_ci_number(s)}" for pair, s in r["pairs"].items())
    return [f"RankC (rank-based consistency of the option log-probabilities): "
            f"{with_ci_number(r)} ({r['n']} questions; unrelated rankings: "
            f"{_number(r.get('chance'), 3)})", f"RankC per language pair: {pairs}"]


def format_metrics_table(metrics: dict[str, dict]) -> str:
    """One table per setting: accuracy and extraction rate per language, then consistency."""
    blocks = []
    for setting, m in metrics.items():
        lines = [f"### {setting} ({m['n_questions']} questions)", "",
                 "| language | accuracy % [95% CI] | extraction % |", "|---|---|---|"]
        for lang in m["languages"]:
            lines.append(f"| {lang} | {with_ci(m['accuracy'][lang])} | "
                         f"{pct(m['extraction_rate'][lang])} |")
        c = m["consistency"]
        consistency = (f"Cross-lingual consistency: {with_ci(c)} % ({c['n']} questions; "
                       f"{c['skipped']} with < 2 parsed languages skipped)")
        lines += ["", consistency,
                  f"Consistent and correct: {with_ci(m['consistent_correct'])} %",
                  *agreement_lines(m), *rankc_lines(m)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def rankc_section(grid: dict) -> str:
    """The report's RankC table: per cell and setting, overall and per language pair."""
    rows = [(name, setting, m["rankc"]) for name, cell in grid["cells"].items()
            for setting, m in cell["metrics"].items() if m.get("rankc")]
    if not rows:
        return ""
    pairs = list(dict.fromkeys(p for *_, r in rows for p in r["pairs"]))
    header = ["cell", "setting", "RankC [95% CI]", "chance", *pairs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, setting, r in rows:
        cells = [name, setting, with_ci_number(r), _number(r.get("chance"), 3)]
        cells += [with_ci_number(r["pairs"].get(p)) for p in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("RankC (Qi et al., EMNLP 2023): per question, how alike two languages rank the "
            "options by the model's log-probabilities after the prompt and answer cue (no "
            "response): the overlap of their top-j options at every depth j, depth 1 weighing "
            "most; 1 is the same ranking, `chance` what unrelated rankings score. Mean over "
            "questions and language pairs, 95% bootstrap intervals over questions.")
    return "## RankC: consistency of the options' ranking\n\n" + note + "\n\n" + "\n".join(lines)


def mean_accuracy(m: dict) -> float | None:
    """The mean of a setting's per-language accuracies (the paper's "Avg." column)."""
    values = [m["accuracy"][lang]["value"] for lang in m["languages"]]
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def format_paper_table(rows: list[PaperRow]) -> str:
    """The paper's table: a row per phase, accuracy per language with 95% intervals, their
    mean, CALM's consistency as its script scores it and ours, in %."""
    from calm_rag.evaluation.calm_consistency import SCRIPT_ORDER

    found = {lang for r in rows for lang in r.ours["languages"]}  # the paper's order first
    langs = [lang for lang in SCRIPT_ORDER if lang in found] + sorted(found - {*SCRIPT_ORDER})
    header = ["phase", "questions x samples", *langs, "mean accuracy",
              "consistency (CALM's script)", "consistency (ours)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        accuracy = r.ours["accuracy"]
        cells = [r.label, f"{r.ours['n_questions']} x {r.samples_per_question}",
                 *[with_ci(accuracy[lang]) if lang in accuracy else "n/a" for lang in langs],
                 pct(mean_accuracy(r.ours)), with_ci(r.calm), with_ci(r.ours["consistency"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
