"""The one prompt and answer format, shared by training, IFD curation and inference.

BioNER is recast as JSON generation (arXiv 2512.22738, Sec. 3.1): the model reads an
instruction naming the entity types plus a text, and writes
`[{"entity": "Disease", "name": "..."}]`, or `[]` when the text names none.
"""
from __future__ import annotations

import json
from typing import Iterable, List, Sequence

from ..errors import Errors
from .records import Mention, Record

FORMAT_VERSION = 1
ANSWER_CUE = "\nAnswer:\n"
TEXT_CUE = "\nText: "
EMPTY_ANSWER = "[]"


def check_labels(labels: Iterable[str]) -> List[str]:
    """Return `labels` as a list, or raise if it is empty, repeats a name or holds a blank."""
    result = list(labels) if not isinstance(labels, str) else [labels]
    if not result or len(set(result)) != len(result):
        raise ValueError(Errors.E005.format(labels=result))
    if any(not isinstance(label, str) or not label.strip() for label in result):
        raise ValueError(Errors.E005.format(labels=result))
    return result


def instruction(labels: Sequence[str]) -> str:
    """The task instruction for these entity types."""
    names = ", ".join(check_labels(labels))
    return (
        f"Extract all biomedical named entities of the types {names} from the text. "
        'Answer with a JSON list of {"entity": type, "name": exact text}, or [] if there are none.'
    )


def prompt_prefix(labels: Sequence[str]) -> str:
    """The part of every prompt that does not depend on the text (cacheable)."""
    return instruction(labels) + TEXT_CUE


def build_prompt(text: str, labels: Sequence[str]) -> str:
    """The full prompt the model continues with its answer."""
    return prompt_prefix(labels) + text + ANSWER_CUE


def render_answer(mentions: Iterable[Mention]) -> str:
    """The JSON answer for these mentions, in the given order, each pair once."""
    items = [{"entity": m.label, "name": m.name} for m in dict.fromkeys(mentions)]
    return json.dumps(items, ensure_ascii=False)


def answer_for_record(record: Record) -> str:
    """The gold answer for a record: its distinct mentions in order of first appearance."""
    return render_answer(record.mentions())
