"""Markdown tables of metrics, for the terminal, README and reports alike."""

from __future__ import annotations


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _with_ci(summary: dict) -> str:
    low, high = summary["ci95"]
    if low is None:  # too few questions for an interval
        return _pct(summary["value"])
    return f"{_pct(summary['value'])} [{_pct(low)}, {_pct(high)}]"


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
                  f"Consistent and correct: {_with_ci(m['consistent_correct'])} %",
                  *agreement_lines(m)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
