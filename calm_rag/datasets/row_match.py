"""Which row of a translated file is which row of the pivot: rows lined up by their content.

A translation keeps the gold letter, the option count, the numbers (ages, doses, lab values) and
many names (drugs, eponyms, acronyms, units), and its length follows the pivot's by a ratio
typical of the language pair. Each pair of rows gets a score from these; a monotone alignment
(a diff: rows stay in order, gaps stand for inserted or removed rows) maximises the total score
in a band around the diagonal, so a removed, inserted or duplicated row shifts nothing after it.
A placement's confidence is its margin: how much lower the best alignment scores that places
either of its rows elsewhere. Files whose every row looks most like its own position skip the
alignment (the positions are kept as they are).
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache

import numpy as np

from calm_rag.records import Question

GAP = 1.5
"""What an unmatched row costs. A pair scoring above -2 GAP stays a pair (its differences are
then named) rather than becoming a removed and an inserted row; a shift pays two gaps once and
gains on every row after it."""
CONFIDENT = 1.0
"""The margin a placement needs; less and the row is dropped as placed with low confidence."""
BANDS = (12, 96)
"""How far (in rows) the alignment may drift from the diagonal, besides the difference in
row counts: the narrow band first, the wide one where the best path touches its edge."""

# Numbers, and words in Latin script (they survive translation as written: drug names and
# units in Chinese text); accented Latin letters included, the signs × and ÷ not.
_TOKEN = re.compile(r"\d+|[A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F]{2,}")
_PREFIX = 6  # atorvastatin ~ atorvastatine


@dataclass(frozen=True)
class Features:
    """What a row's translations keep: gold, option count, numbers and names, log length."""

    gold: str | None
    options: int
    tokens: frozenset[str]
    length: float


def features(question: Question | None) -> Features | None:
    """The features of one row (None for a row that could not be read)."""
    if question is None:
        return None
    text = "\n".join([question.stem, *question.options.values()])
    # 4.0 and 4,0 share 4 and 0; "007" is 7
    tokens = {f"#{int(t)}" if t[0].isdigit() else _word(t) for t in set(_TOKEN.findall(text))}
    return Features(question.answer, len(question.options), frozenset(tokens),
                    math.log1p(len(text)))


@lru_cache(maxsize=1 << 16)
def _word(word: str) -> str:
    """A word's first letters, lower case and without accents: hyperlipidémie ~ hyperlipidemia."""
    if not word.isascii():
        decomposed = unicodedata.normalize("NFKD", word)
        word = "".join(c for c in decomposed if not unicodedata.combining(c))
    return word[:_PREFIX].lower()


def repeats(questions: Sequence[Question | None], i: int, exact: bool = False) -> bool:
    """Row ``i`` is the row before it again (CALM's Chinese MedQA file repeats one row,
    translated twice, so the texts differ in a character or two)."""
    a, b = questions[i], questions[i - 1] if i else None
    if a is None or b is None or a.options != b.options:
        return False
    return a.stem == b.stem or (not exact
                                and SequenceMatcher(None, a.stem, b.stem).ratio() >= 0.9)


def _runs(questions: Sequence[Question | None]) -> list[int]:
    """Per row, the first row of its run of near-identical rows (one question twice)."""
    first = list(range(len(questions)))
    for i in range(1, len(questions)):
        if repeats(questions, i):
            first[i] = first[i - 1]
    return first


class Scorer:
    """The score of a pair of rows (``mine`` against the pivot's ``ref``), scaled for the
    language pair: the typical length ratio and token share of true pairs are measured on the
    files themselves. About +4 for a true pair, -3 for two different questions, 0 where
    nothing can be compared (a row that could not be read)."""

    def __init__(self, mine: list[Features | None], ref: list[Features | None]) -> None:
        self.mine, self.ref = mine, ref
        self.weight = weight = _weights(mine, ref)
        # Only tokens both files have can be shared; each row's weight is its shares' divisor.
        self.tokens = ([frozenset(f.tokens & weight.keys()) if f else frozenset() for f in mine],
                       [frozenset(f.tokens & weight.keys()) if f else frozenset() for f in ref])
        self.totals = (np.array([sum(weight[t] for t in ts) for ts in self.tokens[0]]),
                       np.array([sum(weight[t] for t in ts) for ts in self.tokens[1]]))
        self.read = (np.array([f is not None for f in mine]),
                     np.array([f is not None for f in ref]))
        golds = {g: k for k, g in enumerate({f.gold for f in mine + ref if f and f.gold})}
        self.golds = (np.array([golds[f.gold] if f and f.gold else -1 for f in mine]),
                      np.array([golds[f.gold] if f and f.gold else -1 for f in ref]))
        self.options = (np.array([f.options if f else 0 for f in mine]),
                        np.array([f.options if f else 0 for f in ref]))
        self.lengths = (np.array([f.length if f else 0.0 for f in mine]),
                        np.array([f.length if f else 0.0 for f in ref]))
        self.center = (float(np.median(self.lengths[0][self.read[0]])
                             - np.median(self.lengths[1][self.read[1]]))
                       if self.read[0].any() and self.read[1].any() else 0.0)
        self.spread, self.typical = 0.1, 1.0
        self._calibrate()

    def _calibrate(self) -> None:
        """The typical length deviation and token share of a true pair: per row, the closest
        length and largest share among the pivot rows one either side of its position (most
        rows sit within one row of their place, even in a shifted file), then the medians."""
        i, j = self.band(-1, 1)
        shares, evidence = self._shares(i, j)
        deviation = np.abs(self._deviation(i, j))
        deviation[(j < 0) | (j >= len(self.ref))] = np.inf
        closest = deviation.min(axis=1)
        if np.isfinite(closest).any():
            self.spread = max(float(np.median(closest[np.isfinite(closest)])), 0.02)
        shares[evidence <= 0] = -1.0
        largest = shares.max(axis=1)
        if (largest >= 0).any():
            self.typical = max(float(np.median(largest[largest >= 0])), 0.05)

    def band(self, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
        """Index arrays ``(i, j)`` of the cells with ``j - i`` in ``[low, high]``: row ``i``,
        column ``c`` is pivot row ``j = i + low + c`` (which may lie outside the file)."""
        rows = np.arange(len(self.mine))[:, None]
        return np.broadcast_to(rows, (len(self.mine), high - low + 1)), (
            rows + low + np.arange(high - low + 1)[None, :])

    def _shares(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weighted share of tokens each pair has in common, and how much evidence (the
        smaller side's weight) stands behind it (0: none)."""
        inside = (j >= 0) & (j < len(self.ref))
        jj = np.where(inside, j, 0)
        evidence = np.where(inside, np.minimum(self.totals[0][i], self.totals[1][jj]), 0.0)
        shared = np.zeros(i.shape)
        some = evidence > 0
        weight, mine, ref = self.weight.__getitem__, self.tokens[0], self.tokens[1]
        shared[some] = [sum(map(weight, mine[a] & ref[b]))
                        for a, b in zip(i[some].tolist(), j[some].tolist(), strict=True)]
        return np.divide(shared, evidence, out=np.zeros(i.shape), where=evidence > 0), evidence

    def _deviation(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        jj = np.clip(j, 0, max(len(self.ref) - 1, 0))
        return self.lengths[0][i] - self.lengths[1][jj] - self.center

    def scores(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The score of every pair ``(i[k], j[k])``; -inf where ``j`` is outside the file."""
        inside = (j >= 0) & (j < len(self.ref))
        jj = np.where(inside, j, 0)
        gold_mine, gold_ref = self.golds[0][i], self.golds[1][jj]
        known = (gold_mine >= 0) & (gold_ref >= 0)
        score = np.where(known, np.where(gold_mine == gold_ref, 1.0, -2.0), 0.0)
        score -= self.options[0][i] != self.options[1][jj]
        share, evidence = self._shares(i, j)
        # A row with few rare tokens says little either way.
        score += np.where(evidence > 0, np.minimum(1.0, evidence / 3)
                          * np.clip(3 * share / self.typical - 1, -1.0, 2.0), 0.0)
        score += np.clip(1 - np.abs(self._deviation(i, j)) / (4 * self.spread), -1.5, 1.0)
        score = np.where(self.read[0][i] & self.read[1][jj], score, 0.0)
        return np.where(inside, score, -np.inf)

    def __call__(self, i: int, j: int) -> float:
        return float(self.scores(np.array([i]), np.array([j]))[0])

    def share(self, i: int, j: int) -> float | None:
        """One pair's token share (None: no evidence)."""
        share, evidence = self._shares(np.array([i]), np.array([j]))
        return float(share[0]) if evidence[0] > 0 else None

    def unlike(self, i: int, j: int) -> str:
        """How a pair differs from a typical true pair, in words ("" where it does not)."""
        parts = []
        share = self.share(i, j)
        if share is not None and share < 0.35 * self.typical:
            parts.append("shares few of its numbers and names")
        deviation = float(self._deviation(np.array([i]), np.array([j]))[0])
        if self.read[0][i] and self.read[1][j] and abs(deviation) > 4 * self.spread:
            parts.append(f"is {math.exp(abs(deviation)):.1f}x "
                         f"{'longer' if deviation > 0 else 'shorter'} than usual")
        return " and ".join(parts)


def _weights(mine: list[Features | None], ref: list[Features | None]) -> dict[str, float]:
    """A token's weight: rarer is stronger (log inverse row frequency, the smaller of the two
    files'); a token only one file has cannot be shared and is left out."""
    counts = [Counter(t for f in rows if f for t in f.tokens) for rows in (mine, ref)]
    sizes = [max(len(mine), 1), max(len(ref), 1)]
    return {t: min(math.log(sizes[0] / counts[0][t]), math.log(sizes[1] / counts[1][t]))
            for t in counts[0].keys() & counts[1].keys()}


@dataclass
class Match:
    """How one language's rows line up with the pivot's."""

    partner: list[int | None]
    """Per pivot row: the row of this language that is its translation (None: it has none)."""
    confident: list[bool]
    """Per pivot row: its partner was placed with confidence (the margin, see module)."""
    extra: list[int]
    """Rows of this language that are no pivot row's translation (inserted or repeated)."""
    score: list[float]
    """Per pivot row: how alike it and its partner are (see :class:`Scorer`; 0: none)."""
    scorer: Scorer
    shifted: bool
    """The alignment was needed: positions alone did not hold."""


def match_rows(mine: list[Question | None], ref: list[Question | None],
               ref_features: list[Features | None] | None = None) -> Match:
    """Line ``mine`` up with the pivot's rows ``ref`` by content (see the module);
    ``ref_features``: the pivot's features, computed once for every language."""
    if ref_features is None:
        ref_features = [features(q) for q in ref]
    scorer = Scorer([features(q) for q in mine], ref_features)
    n = len(ref)
    if len(mine) == n:
        near = scorer.scores(*scorer.band(-1, 1))
        if (near[:, 1] >= near.max(axis=1)).all():  # every row is most like its own place
            return Match(list(range(n)), [True] * n, [], near[:, 1].tolist(), scorer,
                         shifted=False)
    grid = _Grid(scorer, np.array(_runs(mine)), np.array(_runs(ref)), BANDS[0])
    if grid.at_edge():  # the best path may have been kept from a better one outside
        grid = _Grid(scorer, grid.runs_mine, grid.runs_ref, BANDS[1])
    found = grid.match()
    if len(mine) == n and found.partner == list(range(n)) and not found.extra:
        # The content agrees with the positions after all (short rows with few numbers and
        # names look like their neighbours): nothing shifted, so positions hold as before.
        return dataclasses.replace(found, confident=[True] * n, shifted=False)
    return found


class _Grid:
    """The banded alignment: every cell ``(i, j)`` with ``j - i`` in ``[low, high]`` is kept
    as ``[i, c]``, ``c = j - i - low``, so a match (``i + 1, j + 1``) stays in column ``c``.

    ``ahead[i, c]``: the best score of the first ``i`` rows against the first ``j`` pivot
    rows; ``behind[i, c]``: of the rows from ``i`` on against those from ``j`` on."""

    def __init__(self, scorer: Scorer, runs_mine: np.ndarray, runs_ref: np.ndarray,
                 band: int) -> None:
        self.scorer, self.runs_mine, self.runs_ref = scorer, runs_mine, runs_ref
        self.n_i, self.n_j = n_i, n_j = len(scorer.mine), len(scorer.ref)
        self.low = min(0, n_j - n_i) - band
        self.high = max(0, n_j - n_i) + band
        self.width = self.high - self.low + 1
        self.scores = np.full((n_i + 1, self.width), -np.inf)  # the last row: no pair
        self.scores[:n_i] = scorer.scores(*scorer.band(self.low, self.high))
        self.ahead, self.behind = self._forward(), self._backward()
        self.path = self._trace()

    def _js(self, i: int) -> np.ndarray:
        return i + self.low + np.arange(self.width)

    def _forward(self) -> np.ndarray:
        ahead = np.full((self.n_i + 1, self.width), -np.inf)
        steps = GAP * np.arange(self.width)
        js = self._js(0)
        ahead[0] = np.where((js >= 0) & (js <= self.n_j), -GAP * js, -np.inf)
        for i in range(1, self.n_i + 1):
            diagonal = ahead[i - 1] + self.scores[i - 1]
            skip_mine = np.append(ahead[i - 1, 1:], -np.inf) - GAP
            best = np.maximum(diagonal, skip_mine)
            # Skipping pivot rows moves along the row: a running maximum, less GAP a step.
            best = np.maximum.accumulate(best + steps) - steps
            js = self._js(i)
            ahead[i] = np.where((js >= 0) & (js <= self.n_j), best, -np.inf)
        return ahead

    def _backward(self) -> np.ndarray:
        behind = np.full((self.n_i + 1, self.width), -np.inf)
        steps = GAP * np.arange(self.width)
        js = self._js(self.n_i)
        behind[self.n_i] = np.where((js >= 0) & (js <= self.n_j), -GAP * (self.n_j - js),
                                    -np.inf)
        for i in range(self.n_i - 1, -1, -1):
            diagonal = behind[i + 1] + self.scores[i]
            skip_mine = np.insert(behind[i + 1, :-1], 0, -np.inf) - GAP
            best = np.maximum(diagonal, skip_mine)
            best = np.maximum.accumulate((best - steps)[::-1])[::-1] + steps
            js = self._js(i)
            behind[i] = np.where((js >= 0) & (js <= self.n_j), best, -np.inf)
        return behind

    def _trace(self) -> list[tuple[int, int]]:
        """The matched pairs of the best alignment, first to last (a match preferred on
        ties, then skipping a row of this language)."""
        i, c, path = self.n_i, self.n_j - self.n_i - self.low, []
        while i or i + self.low + c:
            here = self.ahead[i, c]
            if i and math.isclose(here, self.ahead[i - 1, c] + self.scores[i - 1, c]):
                path.append((i - 1, i - 1 + self.low + c))
                i -= 1
            elif i and c + 1 < self.width and math.isclose(here, self.ahead[i - 1, c + 1] - GAP):
                i, c = i - 1, c + 1
            else:
                c -= 1
        return path[::-1]

    def at_edge(self) -> bool:
        return any(j - i in (self.low, self.high) for i, j in self.path)

    def match(self) -> Match:
        """The pairs, each with its confidence, and the rows left over."""
        total = self.ahead[self.n_i, self.n_j - self.n_i - self.low]
        # Every cell's best total through it as a match: ahead + the pair + behind.
        through = self.ahead[:-1] + self.scores[:-1] + self.behind[1:]
        partner: list[int | None] = [None] * self.n_j
        confident = [False] * self.n_j
        for i, j in self.path:
            confident[j] = bool(total - self._elsewhere(through, i, j) >= CONFIDENT)
        score = [0.0] * self.n_j
        for (i, j), (first, _) in zip(self.path, _first_of_twins(self.path, self.runs_mine),
                                      strict=True):
            partner[j] = first
            score[j] = float(self.scores[i, j - i - self.low])  # twins score alike
        matched = set(partner)
        extra = [i for i in range(self.n_i) if i not in matched]
        return Match(partner, confident, extra, score, self.scorer, shifted=True)

    def _elsewhere(self, through: np.ndarray, i: int, j: int) -> float:
        """The best total of an alignment that matches row ``i`` to another pivot row, or
        pivot row ``j`` to another row. A near-identical neighbour (one question twice, in
        either file) is no other row."""
        columns = np.arange(self.width)
        js = self._js(i)
        other_j = (js >= 0) & (js < self.n_j)
        other_j[other_j] = self.runs_ref[js[other_j]] != self.runs_ref[j]
        row_best = through[i, other_j].max(initial=-np.inf)
        rows = j - self.low - columns  # the rows i' whose cell (i', j) is in the band
        other_i = (rows >= 0) & (rows < self.n_i)
        other_i[other_i] = self.runs_mine[rows[other_i]] != self.runs_mine[i]
        column_best = through[rows[other_i], columns[other_i]].max(initial=-np.inf)
        return float(max(row_best, column_best))


def _first_of_twins(path: list[tuple[int, int]], runs: np.ndarray) -> list[tuple[int, int]]:
    """A question that is in this language twice keeps its first row (the later one is the
    repeat that shifted the rest): the two score alike, the alignment may take either."""
    matched = {i for i, _ in path}
    moved = []
    for i, j in path:
        first = int(runs[i])
        moved.append((first, j) if first != i and first not in matched else (i, j))
    return moved
