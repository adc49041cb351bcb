"""Alignment of named mentions back to character offsets in the original text.

Policy: every occurrence of each name counts. A name matches exactly first; only if it
has no exact occurrence does it match ignoring case. Runs of whitespace in a name match
any run of whitespace in the text. A match must not start or end inside a word (a letter
or digit on both sides of its edge). Overlapping matches are resolved longest first, then
leftmost, then by the order the model named them. Names with no occurrence are returned
as `unmatched`, never invented.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from .records import Entity, Mention


@dataclass
class Alignment:
    """Entities found for a list of mentions, and the mentions that occur nowhere."""

    entities: List[Entity] = field(default_factory=list)
    unmatched: List[Mention] = field(default_factory=list)


def _pattern(name: str, ignore_case: bool) -> "re.Pattern[str]":
    body = r"\s+".join(re.escape(part) for part in name.split())
    return re.compile(body, re.IGNORECASE if ignore_case else 0)


def _on_word_edges(text: str, start: int, end: int) -> bool:
    """True unless the match cuts a word at its start or its end."""
    cuts_start = start > 0 and text[start - 1].isalnum() and text[start].isalnum()
    cuts_end = end < len(text) and text[end - 1].isalnum() and text[end].isalnum()
    return not (cuts_start or cuts_end)


def find_occurrences(text: str, name: str) -> List[Tuple[int, int]]:
    """All (start, end) matches of `name` in `text` under the policy above."""
    if not name.split():
        return []
    for ignore_case in (False, True):
        spans = [
            (m.start(), m.end())
            for m in _pattern(name, ignore_case).finditer(text)
            if _on_word_edges(text, m.start(), m.end())
        ]
        if spans:
            return spans
    return []


def align_mentions(text: str, mentions: Sequence[Mention]) -> Alignment:
    """Place each mention at all its occurrences, keeping non-overlapping spans."""
    alignment = Alignment()
    candidates = []
    for order, mention in enumerate(mentions):
        spans = find_occurrences(text, mention.name)
        if not spans:
            alignment.unmatched.append(mention)
        candidates.extend((start - end, start, order, end, mention.label) for start, end in spans)
    taken: List[Entity] = []
    for _, start, _, end, label in sorted(candidates):
        if all(end <= other.start or start >= other.end for other in taken):
            taken.append(Entity(start, end, label))
    alignment.entities = sorted(taken)
    return alignment
