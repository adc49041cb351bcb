"""A rule-based sentence splitter for biomedical text that returns character offsets; stdlib only.

Sentences end at `.`, `!` or `?` (plus closing quotes or brackets) followed by whitespace and
an upper-case letter, a digit or an opening bracket, unless the word before is a common
abbreviation or a single letter (`E. coli`, `J. Smith`). Every line break ends a sentence.
Offsets never include surrounding whitespace, and the text is never changed.
"""
from __future__ import annotations

import re
from typing import List, Tuple

ABBREVIATIONS = frozenset(
    "al approx ca cf co dr e.g eq etc fig figs i.e inc jr ltd mr mrs ms no nos prof ref refs resp sp spp sr st var viz vol vs".split()
)
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]?[A-Z0-9\u0391-\u03a9])")
_WORD_BEFORE = re.compile(r"(\S+)$")


def _trimmed(text: str, start: int, end: int) -> Tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _ends_sentence(text: str, line_start: int, stop: int) -> bool:
    """Whether the punctuation run ending at `stop` closes a sentence rather than an abbreviation."""
    match = _WORD_BEFORE.search(text, line_start, stop)
    word = match.group(1) if match else ""
    core = word.lstrip("\"'([").rstrip("\"')]\u201d\u2019")
    if not core.endswith("."):
        return True
    stem = core[:-1]
    if len(stem) == 1 and stem.isalpha():
        return False
    return stem.lower() not in ABBREVIATIONS


def split_sentences(text: str) -> List[Tuple[int, int]]:
    """(start, end) offsets of the sentences in `text`, in order, without surrounding whitespace."""
    spans: List[Tuple[int, int]] = []
    line_start = 0
    for line in text.splitlines(keepends=True):
        line_end = line_start + len(line)
        start = line_start
        for match in _BOUNDARY.finditer(text, line_start, line_end):
            if _ends_sentence(text, line_start, match.end()):
                spans.append(_trimmed(text, start, match.end()))
                start = match.end()
        spans.append(_trimmed(text, start, line_end))
        line_start = line_end
    return [(start, end) for start, end in spans if end > start]


def split_long(text: str, start: int, end: int, max_chars: int) -> List[Tuple[int, int]]:
    """Cut `text[start:end]` into pieces of at most `max_chars` characters, at whitespace where possible."""
    pieces: List[Tuple[int, int]] = []
    start, end = _trimmed(text, start, end)
    while end - start > max_chars:
        limit = start + max_chars
        cut = next((i for i in range(limit, start, -1) if text[i].isspace()), limit)
        pieces.append(_trimmed(text, start, cut))
        start, end = _trimmed(text, cut, end)
    if end > start:
        pieces.append((start, end))
    return [(s, e) for s, e in pieces if e > s]
