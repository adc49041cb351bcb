"""The `bioselecttune.Scorer.v1` scorer: spaCy's entity P/R/F plus the component's failure counts."""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, Iterable

from spacy.scorer import get_ner_prf
from spacy.training import Example
from spacy.util import registry

USER_DATA_KEY = "bioselecttune"
# Each name the model gave that occurs nowhere in its sentence: {"start", "end" (the sentence), "label", "name"}.
DROPPED_NAMES_KEY = "bioselecttune_dropped_names"
COUNT_KEYS = ("sentences", "prompts", "parse_failures", "dropped_names", "overlapping_spans", "unaligned_spans")


def doc_counts(examples: Iterable[Example]) -> Counter:
    """Sum the per-doc counts the component left in `doc.user_data` of the predicted docs."""
    totals: Counter = Counter({key: 0 for key in COUNT_KEYS})
    for example in examples:
        totals.update(example.predicted.user_data.get(USER_DATA_KEY, {}))
    return totals


def score_bioselecttune(examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
    """Strict entity P/R/F overall and per type (as `spacy evaluate` reports), and `bioselecttune_<count>` totals."""
    examples = list(examples)
    scores = get_ner_prf(examples, **kwargs)
    scores.update({f"{USER_DATA_KEY}_{key}": count for key, count in doc_counts(examples).items()})
    return scores


@registry.scorers("bioselecttune.Scorer.v1")
def make_bioselecttune_scorer() -> Callable[..., Dict[str, Any]]:
    return score_bioselecttune
