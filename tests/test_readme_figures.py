"""The READMEs' figures cannot drift from where they come from.

Every table of figures in README.md and pipelines/README.md either names the bench/results file
it was copied from (looking back from the table to the section's heading), and each of its rows
is then found in that file, or is checked against the command it quotes, run here on CALM's
released files. A new table of figures without a source fails the census (a figure measured by
hand goes into a results file written by a bench script first). Sentences that quote a results
file (PROSE, QUOTED_TEXT) are checked against it, and counts the README quotes from a test or a
registry against what they count.
Text parsing and three cheap commands on CALM's files (no model, no index): a few seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from calm_rag.cli import main
from calm_rag.experiment import load_experiment
from tests.helpers import ADAPTER_LANGUAGES, CALM_MEDQA, CALM_REFERENCE

REPO = Path(__file__).resolve().parents[1]
READMES = (REPO / "README.md", REPO / "pipelines" / "README.md")
_SOURCE = re.compile(r"bench/results/[\w.-]+\.md")
_DECIMAL = re.compile(r"[-+]?\d+\.\d+")

# Tables checked against the command they quote (below), known by the start of their header.
COMMAND_CHECKED = {"| language | accuracy % [95% CI] | extraction % |":
                   "calm-rag metrics calm-reference/xcsqa/samples"}


@dataclass(frozen=True)
class Table:
    where: str  # file:line of the header row
    header: str
    rows: tuple[tuple[str, ...], ...]
    source: str | None  # the bench/results file named before it in its section


def is_row(line: str) -> bool:
    return line.lstrip().startswith("|")  # a table inside a list item is indented


def cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


def tables(path: Path) -> list[Table]:
    """Every markdown table of ``path``, with the results file its section names before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if is_row(lines[i]) and i + 1 < len(lines) and lines[i + 1].lstrip().startswith("|---"):
            end = i + 2
            while end < len(lines) and is_row(lines[end]):
                end += 1
            rows = tuple(cells(line) for line in lines[i + 2:end])
            found.append(Table(f"{path.relative_to(REPO)}:{i + 1}", lines[i].strip(), rows,
                               source_before(lines, i)))
            i = end
        else:
            i += 1
    return found


def source_before(lines: list[str], start: int) -> str | None:
    """The last results file named between the table and its section's heading (a ``#`` line or
    a bold paragraph lead), tables excluded."""
    for line in reversed(lines[:start]):
        if is_row(line):
            continue
        cited = _SOURCE.findall(line)
        if cited:
            return cited[-1]
        if line.startswith(("#", "**")):
            return None
    return None


def has_figures(table: Table) -> bool:
    return any(_DECIMAL.search(cell) for row in table.rows for cell in row)


def figure_tables() -> list[Table]:
    return [table for readme in READMES for table in tables(readme) if has_figures(table)]


def decimals(row: tuple[str, ...]) -> list[str]:
    return [number for cell in row for number in _DECIMAL.findall(cell)]


def is_subsequence(short: list[str], long: list[str]) -> bool:
    remaining = iter(long)
    return all(any(item == other for other in remaining) for item in short)


def in_source(row: tuple[str, ...], source_rows: list[tuple[str, ...]]) -> bool:
    """A README row is in its source when one source row holds the README row's label (the first
    word of its first cell without digits: "weighted (en=2)" is "weighted") and all its decimal
    figures, in order (the README may leave columns or intervals out, never change a figure)."""
    label = next((cell.split()[0] for cell in row if cell and not re.search(r"\d", cell)), None)
    return any((label is None or label in found) and is_subsequence(decimals(row), decimals(found))
               for found in source_rows)


def test_every_table_of_figures_has_a_source():
    """A table of figures names its results file or is checked against its command; the list
    of the latter holds no table the READMEs no longer have."""
    headers = set()
    for table in figure_tables():
        known = [key for key in COMMAND_CHECKED if table.header.startswith(key)]
        headers.update(known)
        assert table.source or known, (
            f"{table.where}: a table of figures with no source: name the bench/results file it "
            "comes from in the text before it")
    assert headers == set(COMMAND_CHECKED)


@pytest.mark.parametrize("table", [t for t in figure_tables() if t.source],
                         ids=lambda t: t.where)
def test_a_sourced_table_quotes_its_results_file(table: Table):
    assert table.source is not None
    path = REPO / table.source
    assert path.is_file(), f"{table.where} names {table.source}, which does not exist"
    source_rows = [row for found in tables(path) for row in found.rows]
    for row in table.rows:
        assert in_source(row, source_rows), (
            f"{table.where}: {' | '.join(row)} not in {table.source}")


def test_the_row_check_catches_a_changed_figure():
    """Hand-made case: one figure of an interval changed, or left out, is caught; a column left
    out is not a change."""
    source = [("before", "57.4 [54.7, 60.1]", "99.4", "0.493 [0.469, 0.518]")]
    assert in_source(("before", "57.4 [54.7, 60.1]", "0.493"), source)
    assert not in_source(("before", "57.4 [54.6, 60.1]", "99.4"), source)
    assert not in_source(("after", "57.4 [54.7, 60.1]", "99.4"), source)


def readme_table(header: str) -> Table:
    (table,) = [t for t in figure_tables() if t.header.startswith(header)]
    return table


def printed_table(text: str, header: str) -> list[tuple[str, ...]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return rows


def test_the_metrics_of_calms_samples_are_what_the_command_prints(capsys):
    """README quotes `calm-rag metrics calm-reference/xcsqa/samples`: its table and its
    consistency line are what that command prints now."""
    samples = CALM_REFERENCE / "samples"
    if not samples.is_dir():
        pytest.skip(f"CALM's released samples are not beside the project ({samples} missing)")
    header = next(iter(COMMAND_CHECKED))
    assert main(["metrics", str(samples)]) == 0
    printed = capsys.readouterr().out
    assert list(readme_table(header).rows) == printed_table(printed, header)
    readme = READMES[0].read_text(encoding="utf-8")
    quoted = re.search(r"Cross-lingual consistency: (\S+ \[\S+ \S+\]) % \((\d+) questions\); "
                       r"consistent and correct:\s+(\S+ \[\S+ \S+\]) %", readme)
    assert quoted is not None
    assert f"Cross-lingual consistency: {quoted[1]} % ({quoted[2]} questions;" in printed
    assert f"Consistent and correct: {quoted[3]} %" in printed
    agreement = re.search(r"On CALM's released samples: alpha (\S+\s+\[\S+\s+\S+\]), entropy "
                          r"(\S+\s+\[\S+\s+\S+\]) bits", readme)
    assert agreement is not None
    alpha, entropy = (" ".join(figure.split()) for figure in agreement.groups())  # lines wrap
    assert f"Krippendorff's alpha (languages as raters): {alpha}" in printed
    assert f"Answer entropy across languages: {entropy} bits" in printed


def check_sample() -> list[str]:
    """README's sample of `calm-rag run pipelines/calm-medqa.yaml --check`, without its $ line."""
    readme = READMES[0].read_text(encoding="utf-8")
    block = re.search(r"^```\n\$ calm-rag run pipelines/calm-medqa\.yaml --check\n(.*?)^```",
                      readme, re.S | re.M)
    assert block is not None, "README lost its --check sample for calm-medqa"
    return block[1].splitlines()


def as_pattern(line: str) -> re.Pattern[str]:
    """A sample line as a pattern: ``...`` stands for the start of a path on the reader's
    machine."""
    return re.compile(r"\S*".join(re.escape(part) for part in line.split("...")))


def test_the_check_sample_is_what_the_command_prints(capsys):
    """README's --check sample for calm-medqa is the output line for line, the error on stderr
    and exit 2 included."""
    if not CALM_MEDQA.is_dir():
        pytest.skip(f"CALM's MedQA files are not beside the project ({CALM_MEDQA} missing)")
    sample = check_sample()
    assert main(["run", str(REPO / "pipelines" / "calm-medqa.yaml"), "--check"]) == 2
    captured = capsys.readouterr()
    printed = captured.out.splitlines() + captured.err.splitlines()
    assert len(printed) == len(sample)
    for want, got in zip(sample, printed, strict=True):
        assert as_pattern(want).fullmatch(got), f"README: {want}\nprinted: {got}"
    assert "(exit 2:" in READMES[0].read_text(encoding="utf-8")


def test_the_adapter_text_count_is_the_demos_questions_times_its_languages():
    """README quotes tests/test_adapters.py's comparison on the demo's questions: the counts it
    gives are the demo's held-out questions times the languages that test keeps."""
    from calm_rag.pipeline.questions import load_questions, split_questions

    quoted = re.search(r"On the demo's (\d+) held-out questions in (\w+), (\w+) and (\w+), "
                       r"greedy texts from base \+ adapter equal the merged model's"
                       r".*?, (\d+) of (\d+)", flat(READMES[0]))
    assert quoted is not None
    experiment = load_experiment(REPO / "pipelines" / "demo.yaml")
    splits = split_questions(load_questions(experiment.data, experiment.base_dir), experiment.data)
    rows = [row for row in splits["heldout"] if row.lang in ADAPTER_LANGUAGES]
    questions = len({row.id for row in rows})
    assert int(quoted[1]) == questions and quoted.groups()[1:4] == ADAPTER_LANGUAGES
    assert int(quoted[5]) == int(quoted[6]) == len(rows) == questions * len(ADAPTER_LANGUAGES)


def flat(path: Path) -> str:
    """The file's text with every run of whitespace one space (README sentences wrap)."""
    return " ".join(path.read_text(encoding="utf-8").split())


def number(text: str) -> float:
    found = re.search(r"[-+]?\d+(?:\.\d+)?", text)
    assert found is not None, f"no figure in {text!r}"
    return float(found[0])


def cell(source: str, row: tuple[str, ...], column: str, which: int = 0) -> float:
    """The first figure of ``column`` in the row starting with ``row``, in the ``which``-th of
    the source's tables that have such a row and column."""
    matches = []
    for table in tables(REPO / source):
        header = cells(table.header)
        if column in header:
            matches += [found[header.index(column)] for found in table.rows
                        if found[:len(row)] == row]
    assert len(matches) > which, f"{source} has no {row} in a column {column!r}"
    return number(matches[which])


# Figures README sentences quote from a results table: (README, the sentence as a pattern whose
# groups are the figures, where each figure is in the source: (file, row, column[, table])).
DEMO, HELDOUT_AR, STUDY = ("bench/results/demo.md", "bench/results/xcsqa-heldout-ar.md",
                           "bench/results/study-votes.md")
CONSISTENCY = "consistency [95% CI]"
# bench/results/forced_repeat.md: the commit before grammars were compiled in step, and after.
FORCED, DIFFER = "bench/results/forced_repeat.md", "differing between two fresh engines"
BEFORE_IN_STEP, IN_STEP = "c0398cc626d9", "a5724d9f579e"
PROSE = [
    ("README.md", r"two fresh engines sampled (\S+) of the same (\S+) forced-answer texts "
                  r"differently before \(.*?\), (\S+) now, and (\S+) of (\S+) without forced",
     [(FORCED, (BEFORE_IN_STEP, "yes"), DIFFER), (FORCED, (BEFORE_IN_STEP, "yes"), "texts"),
      (FORCED, (IN_STEP, "yes"), DIFFER), (FORCED, (IN_STEP, "no"), DIFFER),
      (FORCED, (IN_STEP, "no"), "texts")]),
    ("README.md", r"Training-question consistency after DPO: (\S+) → (\S+) % zero-shot and "
                  r"(\S+) → (\S+) % with retrieval",
     [(DEMO, ("train/before", "zero-shot"), CONSISTENCY),
      (DEMO, ("train/after", "zero-shot"), CONSISTENCY),
      (DEMO, ("train/before", "rag"), CONSISTENCY), (DEMO, ("train/after", "rag"), CONSISTENCY)]),
    ("README.md", r"held-out Arabic accuracy (\S+) → (\S+)%, RankC on the held-out questions "
                  r"(\S+) → (\S+), consistency (\S+) → (\S+)%",
     [(HELDOUT_AR, ("heldout/before",), "acc ar"), (HELDOUT_AR, ("heldout/after",), "acc ar"),
      (HELDOUT_AR, ("heldout/before",), "RankC [95% CI]"),
      (HELDOUT_AR, ("heldout/after",), "RankC [95% CI]"),
      (HELDOUT_AR, ("heldout/before",), CONSISTENCY),
      (HELDOUT_AR, ("heldout/after",), CONSISTENCY)]),
    ("README.md", r"pooled target accuracy rises from (\S+) % with two languages to (\S+) % with "
                  r"six, clean pairs from (\S+) to (\S+) %",
     [(STUDY, ("pooled", "2 (mean of 15)"), "target accuracy %"),
      (STUDY, ("pooled", "all 6"), "target accuracy %"),
      (STUDY, ("pooled", "2 (mean of 15)"), "clean %"), (STUDY, ("pooled", "all 6"), "clean %")]),
    ("README.md", r"Dawid-Skene, which never ties, follows the language it trusts more and is "
                  r"worst there \((\S+) %\)",
     [(STUDY, ("dawid-skene", "2 (mean of 15)"), "target accuracy %")]),
    ("README.md", r"With `--tie drop` the two-language language-balanced vote is the most "
                  r"accurate \((\S+) %\) but keeps only (\S+) % of the questions",
     [(STUDY, ("language-balanced", "2 (mean of 15)"), "target accuracy %", 1),
      (STUDY, ("language-balanced", "2 (mean of 15)"), "coverage %", 1)]),
    ("README.md", r"gives the best targets \((\S+) %, (\S+) % clean pairs\)",
     [(STUDY, ("weighted", "all 6"), "target accuracy %"),
      (STUDY, ("weighted", "all 6"), "clean %")]),
]


@pytest.mark.parametrize("readme, pattern, sources", PROSE, ids=lambda p: str(p)[:30])
def test_a_sentence_quotes_its_results_table(readme, pattern, sources):
    quoted = re.search(pattern, flat(REPO / readme))
    assert quoted is not None, f"{readme} no longer says {pattern!r}: update PROSE"
    assert [number(figure) for figure in quoted.groups()] == [cell(*where) for where in sources]


# Figures README sentences quote from a results file's text: (README, its sentence, source,
# the source's sentence; every match of the source's pattern, in order, gives the figures).
QUOTED_TEXT = [
    ("README.md", r"retrieval recall@1 of its questions \((\S+): (\d+) of (\d+) question-languages",
     DEMO, r"\*\*retrieval recall@1\*\*: (\S+) \((\d+)/(\d+) question-languages"),
    ("README.md", r"`amx_bf16 avx2 avx512_bf16 avx512f`; (\d+) s and (\d+) s for the two grids",
     "bench/results/dco-vs-calm.md", r"run finished in (\d+) s"),
    ("README.md",
     r"a two-language grid at demo\s+size, (\d+) s, is in `bench/results/dco-vs-calm.md`",
     "bench/results/dco-vs-calm.md", r"run finished in (\d+) s"),
    ("README.md", r"Here float32 took (\S+)x the wall time of `auto`",
     "bench/results/demo_timing.md", r"float32 over `auto`: wall (\S+)x"),
]


@pytest.mark.parametrize("readme, pattern, source, source_pattern", QUOTED_TEXT,
                         ids=lambda p: str(p)[:30])
def test_a_sentence_quotes_its_results_text(readme, pattern, source, source_pattern):
    quoted = re.search(pattern, flat(REPO / readme))
    assert quoted is not None, f"{readme} no longer says {pattern!r}: update QUOTED_TEXT"
    found = [figure for match in re.finditer(source_pattern, flat(REPO / source))
             for figure in match.groups()]
    # The sentence quotes a run of the source's figures, in the source's order.
    want, width = list(quoted.groups()), len(quoted.groups())
    assert any(found[i:i + width] == want for i in range(len(found))), (want, found)


def test_the_paper_table_of_calms_samples_is_what_the_command_prints(capsys):
    """pipelines/README quotes `calm-rag metrics .../samples --paper-table --policy calm`
    (through bench/results/calm-paper-table.md): the row is what the command prints now."""
    samples = CALM_REFERENCE / "samples"
    if not samples.is_dir():
        pytest.skip(f"CALM's released samples are not beside the project ({samples} missing)")
    command = ("`calm-rag metrics ../shared/calm-reference/xcsqa/samples --paper-table "
               "--policy calm`")
    assert command in flat(READMES[1])
    assert main(["metrics", str(samples), "--paper-table", "--policy", "calm"]) == 0
    header = "| phase | questions x samples |"
    (quoted, _) = [t for t in tables(READMES[1]) if t.header.startswith(header)]
    assert list(quoted.rows) == printed_table(capsys.readouterr().out, header)


def test_the_language_count_is_the_registrys():
    from calm_rag.languages import LANGUAGES

    quoted = re.search(r"\| `calm_rag\.languages` \| (\d+) languages:", flat(READMES[0]))
    assert quoted is not None
    assert int(quoted[1]) == len(LANGUAGES)
