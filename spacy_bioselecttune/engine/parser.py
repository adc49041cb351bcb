"""Tolerant parsing of model output into mentions; never raises on model text.

It accepts code fences and other text before or after the array, truncated arrays (complete items
are kept), single-quoted Python-style items and label case variants. Unknown labels,
items of the wrong shape and duplicates are dropped and named in `problems`.
"""
from __future__ import annotations

import ast
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .records import Mention

logger = logging.getLogger("spacy_bioselecttune")

_LABEL_KEYS = ("entity", "type", "label")
_NAME_KEYS = ("name", "text", "span")


@dataclass
class ParseResult:
    """Mentions read from one answer; `ok` is False when no JSON list could be read."""

    mentions: List[Mention] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    ok: bool = True


def _scan(text: str, start: int) -> Tuple[Optional[int], List[Tuple[int, int]]]:
    """Find where the `[` at `start` closes, and the complete `{...}` items inside it.

    Returns the index just past the closing bracket (None if the text ends first) and the
    (start, end) slices of every complete top-level object within.
    """
    depth = 0
    quote: Optional[str] = None
    escaped = False
    item_start = -1
    items: List[Tuple[int, int]] = []
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            if char == "{" and depth == 2:
                item_start = index
        elif char in "]}":
            if char == "}" and depth == 2 and item_start >= 0:
                items.append((item_start, index + 1))
                item_start = -1
            depth -= 1
            if depth == 0:
                return index + 1, items
    return None, items


def _load(fragment: str) -> Any:
    """Read a JSON value, falling back to a Python literal (single quotes)."""
    try:
        return json.loads(fragment)
    except ValueError:
        pass
    try:
        return ast.literal_eval(fragment)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _field(item: Dict[str, Any], keys: Sequence[str]) -> Optional[str]:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str):
            return value
    return None


def _label_and_name(item: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """An answer item's label and name, stripped, or None if it lacks either."""
    label, name = _field(item, _LABEL_KEYS), _field(item, _NAME_KEYS)
    if label is None or name is None or not name.strip():
        return None
    return label.strip(), name.strip()


def item_key(fragment: str) -> Optional[Tuple[str, str]]:
    """The (casefolded label, stripped name) of one `{...}` answer item, or None if it is not one."""
    item = _load(fragment)
    pair = _label_and_name(item) if isinstance(item, dict) else None
    return None if pair is None else (pair[0].casefold(), pair[1])


def parse_answer(raw: str, labels: Sequence[str]) -> ParseResult:
    """Read `[{"entity": label, "name": text}, ...]` from raw model output.

    raw: the model's completion.
    labels: the allowed entity labels; matched case-insensitively and returned in this spelling.
    """
    result = ParseResult()
    text = raw if isinstance(raw, str) else ""  # code fences are text before and after the array
    begin = text.find("[")
    if begin < 0:
        result.ok = False
        result.problems.append("no JSON list")
        logger.warning("Model output holds no JSON list: %r", raw[:200] if isinstance(raw, str) else raw)
        return result
    end, item_slices = _scan(text, begin)
    value = _load(text[begin:end]) if end is not None else None
    if isinstance(value, list):
        items = value
    else:
        items = [_load(text[a:b]) for a, b in item_slices]
        result.problems.append("truncated list" if end is None else "invalid JSON list")
        if not item_slices and text[begin + 1 :].strip():
            result.ok = False
            logger.warning("Model output could not be parsed as a JSON list: %r", raw[:200])
            return result
    allowed = {label.casefold(): label for label in labels}
    seen = set()
    for item in items:
        if not isinstance(item, dict):
            result.problems.append(f"item is not an object: {item!r}")
            continue
        pair = _label_and_name(item)
        if pair is None:
            result.problems.append(f"item lacks a label or a name: {item!r}")
            continue
        label, name = pair
        canonical = allowed.get(label.casefold())
        if canonical is None:
            result.problems.append(f"unknown label {label!r}")
            continue
        mention = Mention(canonical, name)
        if mention in seen:
            result.problems.append(f"duplicate item {item!r}")
            continue
        seen.add(mention)
        result.mentions.append(mention)
    return result
