"""The one prompt and answer format, shared by training, IFD curation and inference.

BioNER is recast as JSON generation (arXiv 2512.22738, Sec. 3.1): the model reads an
instruction naming the entity types plus a text, and writes
`[{"entity": "Disease", "name": "..."}]`, or `[]` when the text names none.
"""
from __future__ import annotations

import json
from typing import Iterable, List, Optional, Sequence, Tuple

from ..errors import Errors
from .records import Mention, Record

FORMAT_VERSION = 1
ANSWER_CUE = "\nAnswer:\n"
TEXT_CUE = "\nText: "
EMPTY_ANSWER = "[]"
# An answer names each (entity, name) pair once (`render_answer`), so one whose last LOOP_ITEMS
# items all repeat earlier pairs is going round a loop that only max_new_tokens would end.
# Four, not three: on dev, a stop after three dropped a name once (scripts/loop_stop_check.py).
LOOP_ITEMS = 4


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


def prompt_labels(prompt: str) -> Optional[List[str]]:
    """The entity types a prompt built by `build_prompt` asks for, or None for another prompt."""
    before, after = instruction(["\0"]).split("\0")
    if not prompt.startswith(before) or after not in prompt:
        return None
    return prompt[len(before) : prompt.index(after)].split(", ")


def draft_template(labels: Sequence[str]) -> str:
    """An answer of the format's shape for these labels, from which speculative decoding drafts
    the JSON around names (`drafting.PromptLookup`); the names are placeholders."""
    return render_answer([Mention(label, name) for label in labels for name in ("x y", "x")])


def prompt_label_groups(labels: Sequence[str], trained_sets: Sequence[Sequence[str]] = ()) -> List[Tuple[str, ...]]:
    """The label lists to prompt with so that every prompt is one the adapter was trained on.

    An adapter trained on a mix of corpora saw each corpus's own label list (e.g. `Disease`,
    `Chemical, Disease` and `Gene`). Requested labels that equal a trained list are asked in one
    prompt; otherwise the fewest trained lists that cover them are chosen greedily, preferring
    lists inside the request. A label only found in a wider list is asked with that list, and
    the caller drops the extra labels. Without trained lists, one prompt names all labels.
    """
    labels = check_labels(labels)
    trained = [tuple(check_labels(s)) for s in trained_sets]
    if not trained:
        return [tuple(labels)]
    wanted = set(labels)
    for candidate in trained:
        if set(candidate) == wanted:
            return [candidate]
    groups: List[Tuple[str, ...]] = []
    remaining = list(labels)
    while remaining:
        inside = [s for s in trained if set(s) <= wanted and set(s) & set(remaining)]
        if inside:
            best = max(inside, key=lambda s: (len(set(s) & set(remaining)), -trained.index(s)))
        else:
            wider = [s for s in trained if remaining[0] in s]
            if not wider:
                return groups + [tuple(remaining)]
            best = min(wider, key=lambda s: (len(s), trained.index(s)))
        groups.append(best)
        remaining = [label for label in remaining if label not in best]
    return sorted(groups, key=lambda s: min(labels.index(label) for label in s if label in wanted))
