"""Several continuations of one prefix in one forward pass: a prefix tree packed into a row.

Scoring asks for the log-probabilities of many short texts that share long beginnings: a
prompt, the n responses sampled after it, and after each response every option of the
question. A :class:`TreePass` lays the tree out in one sequence (the prompt once, then each
response, then each option) and builds the attention mask that lets a token see only the
tokens of its own branch: a response sees the prompt and itself, an option sees the prompt,
its response and itself. Position ids restart where each branch leaves its parent, so every
token is computed exactly as in a plain pass over its own branch, while the shared prompt runs
once instead of once per response.

>>> tree = TreePass()
>>> prompt = tree.add([1, 2, 3])                  # the root: positions 0..2
>>> response = tree.add([4, 5], parent=prompt)     # sees 1 2 3; positions 3..4
>>> option = tree.add([6], parent=response)        # sees 1 2 3 4 5; position 5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Branch:
    """A segment of the tree: its place in the packed row and its next position id."""

    segment: int
    first: int
    """Index in the row of the segment's first token."""
    last: int
    """Index in the row of its last token (``first - 1`` for an empty segment)."""
    end_position: int
    """The position id a child of this segment starts at."""


@dataclass
class TreePass:
    """A prefix tree of token segments in one row, with its attention mask."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)

    def add(self, tokens: Sequence[int], parent: Branch | None = None) -> Branch:
        """Append ``tokens`` as a child of ``parent`` (a root when None)."""
        segment = len(self.parents)
        self.parents.append(-1 if parent is None else parent.segment)
        start = 0 if parent is None else parent.end_position
        first = len(self.ids)
        self.ids.extend(tokens)
        self.positions.extend(range(start, start + len(tokens)))
        self.segments.extend([segment] * len(tokens))
        return Branch(segment, first, len(self.ids) - 1, start + len(tokens))

    def __len__(self) -> int:
        return len(self.ids)

    def attention_mask(self, dtype: Any) -> Any:
        """The additive 4D mask ``(1, 1, n, n)``: 0 where a token may look, the dtype's
        minimum elsewhere (an additive mask suits both eager and SDPA attention)."""
        import torch

        count = len(self.parents)
        sees = torch.zeros(count, count, dtype=torch.bool)
        for segment, parent in enumerate(self.parents):  # parents come before children
            if parent >= 0:
                sees[segment] = sees[parent]
            sees[segment, segment] = True
        segments = torch.tensor(self.segments)
        allowed = sees[segments][:, segments] & torch.ones(
            len(self), len(self), dtype=torch.bool).tril()
        mask = torch.zeros(len(self), len(self), dtype=dtype)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def token_logprobs(model: Any, tree: TreePass, cells: Sequence[tuple[int, int]]
                   ) -> list[float]:
    """``log p(token | the tree's branch up to row)`` for each ``(row, token)`` of ``cells``,
    from one forward pass of ``model`` over ``tree``.

    Only the rows asked for go through the vocabulary projection (``logits_to_keep``).
    """
    import torch

    device = model.device
    keep = sorted({row for row, _ in cells})
    out = model(input_ids=torch.tensor([tree.ids], device=device),
                position_ids=torch.tensor([tree.positions], device=device),
                attention_mask=tree.attention_mask(model.dtype).to(device),
                logits_to_keep=torch.tensor(keep, device=device), use_cache=False)
    logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
    where = {row: k for k, row in enumerate(keep)}
    rows = torch.tensor([where[row] for row, _ in cells], device=device)
    tokens = torch.tensor([token for _, token in cells], device=device)
    return logprobs[rows, tokens].cpu().tolist()
