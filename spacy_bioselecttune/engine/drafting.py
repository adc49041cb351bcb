"""Drafts for speculative decoding, looked up in each row's own context (prompt lookup).

An answer is mostly copied: its names are spans of the text, and the JSON around them repeats
the answer format. A row's next tokens are guessed by finding its last token earlier in its
context (the prompt, then a template answer for its labels, then its answer so far; the latest
occurrence wins) and taking the tokens that followed it there. The model checks a whole draft in
one forward pass and keeps the longest prefix it agrees with plus its own next token, so the
tokens are the greedy ones; only the number of sequential forward passes changes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Tuple

if TYPE_CHECKING:
    import torch

HISTORY_ROUNDING = 64  # history lengths are rounded up to a multiple of this


class PromptLookup:
    """Each row's context tokens in a (rows, length) buffer, and drafts looked up in them.

    Rows follow the rows of the batch they serve: `start` fills rows afresh, `append` adds the
    tokens a step chose to the rows in use (the first ones), `move` copies rows as the batch
    moves them.
    """

    def __init__(self, rows: int, device) -> None:
        import torch

        self.history = torch.zeros((rows, 0), dtype=torch.long, device=device)
        self.lengths = torch.zeros((rows,), dtype=torch.long, device=device)
        self.bound = 0  # no row in use is longer than this

    def start(self, rows: slice, contexts: Sequence[Sequence[int]]) -> None:
        """Give `rows` these contexts (for example prompt and template tokens)."""
        import torch

        longest = max(len(ids) for ids in contexts)
        self._reserve(longest)
        device = self.history.device
        self.history[rows, :longest] = torch.tensor([list(ids) + [0] * (longest - len(ids)) for ids in contexts], device=device)
        self.lengths[rows] = torch.tensor([len(ids) for ids in contexts], device=device)
        self.bound = max(self.bound, longest)

    def append(self, tokens: "torch.Tensor", counts: "torch.Tensor") -> None:
        """Add the first `counts[r]` of `tokens[r]` (rows, width) to each of the first rows."""
        import torch

        rows, width = tokens.shape
        if self.bound + width > self.history.shape[1]:
            self.bound = int(self.lengths[:rows].max())  # rows past `rows` are free
            self._reserve(self.bound + width)
        offsets = self.lengths[:rows, None] + torch.arange(width, device=tokens.device)
        self.history[:rows].scatter_(1, offsets, tokens)  # past a row's count, slots later writes overwrite
        self.lengths[:rows] += counts
        self.bound += width

    def move(self, target: "torch.Tensor", source: "torch.Tensor") -> None:
        """Copy rows `source` into rows `target`."""
        self.history[target] = self.history[source]
        self.lengths[target] = self.lengths[source]

    def drafts(self, rows: int, width: int) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """Up to `width` draft tokens for each of the first `rows` rows (rows, width), and how many
        of them each row has: the tokens after the latest earlier occurrence of its last token."""
        import torch

        history, lengths = self.history[:rows, : self.bound], self.lengths[:rows]
        columns = torch.arange(history.shape[1], device=history.device)
        last = history.gather(1, (lengths - 1)[:, None])
        matches = (history == last) & (columns < (lengths - 1)[:, None])
        start = torch.where(matches, columns, -1).amax(1) + 1  # 0 where the token never occurred before
        offsets = start[:, None] + torch.arange(width, device=history.device)
        valid = (offsets < lengths[:, None]) & (start > 0)[:, None]
        tokens = history.gather(1, offsets.clamp(max=history.shape[1] - 1))
        return tokens, valid.sum(1)

    def _reserve(self, length: int) -> None:
        """Make room for `length` tokens per row."""
        import torch

        if length > self.history.shape[1]:
            grown = self.history.new_zeros((self.history.shape[0], -(-length // HISTORY_ROUNDING) * HISTORY_ROUNDING))
            grown[:, : self.history.shape[1]] = self.history
            self.history = grown
