"""Markdown tables of metrics, for the terminal, README and reports alike."""

from __future__ import annotations


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _with_ci(summary: dict) -> str:
    low, high = summary["ci95"]
    if low is None:  # too few questions for an interval
        return _pct(summary["value"])
    return f"{_pct(summary['value'])} [{_pct(low)}, {_pct(high)}]"


def format_metrics_table(metrics: dict[str, dict]) -> str:
    """One table per setting: accuracy and extraction rate per language, then consistency."""
    blocks = []
    for setting, m in metrics.items():
        lines = [f"### {setting} ({m['n_questions']} questions)", "",
                 "| language | accuracy % [95% CI] | extraction % |", "|---|---|---|"]
        for lang in m["languages"]:
            lines.append(f"| {lang} | {_with_ci(m['accuracy'][lang])} | "
                         f"{_pct(m['extraction_rate'][lang])} |")
        c = m["consistency"]
        consistency = (f"Cross-lingual consistency: {_with_ci(c)} % ({c['n']} questions; "
                       f"{c['skipped']} with < 2 parsed languages skipped)")
        lines += ["", consistency,
                  f"Consistent and correct: {_with_ci(m['consistent_correct'])} %"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
