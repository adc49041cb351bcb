"""Strict entity-level precision, recall and F1 on Records, overall and per label; stdlib only.

A predicted entity counts as correct only if its start, end and label all equal a gold
entity's. The numbers agree with spaCy's `get_ner_prf` on token-aligned spans. Each error
is also classified (wrong label, wrong boundary, missed, spurious) for error analysis.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from ..errors import Errors
from .records import Entity, Record


@dataclass(frozen=True)
class PRF:
    """Counts of true positives, false positives and false negatives, with derived scores."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> Dict[str, float]:
        return {"p": self.precision, "r": self.recall, "f": self.f1, "tp": self.tp, "fp": self.fp, "fn": self.fn}


@dataclass(frozen=True)
class NerScores:
    """Micro-averaged scores over all labels, and one PRF per label seen in gold or predictions."""

    overall: PRF
    per_label: Dict[str, PRF] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {
            "ents_p": self.overall.precision,
            "ents_r": self.overall.recall,
            "ents_f": self.overall.f1,
            "ents_per_type": {label: prf.to_dict() for label, prf in sorted(self.per_label.items())},
        }


def score_records(gold: Sequence[Record], predicted: Sequence[Record]) -> NerScores:
    """Strict P/R/F1 of `predicted` against `gold`, paired by position and checked by id and text."""
    if len(gold) != len(predicted):
        raise ValueError(Errors.E300.format(gold=len(gold), predicted=len(predicted)))
    counts: Dict[str, Counter] = {}
    for gold_record, predicted_record in zip(gold, predicted):
        if gold_record.id != predicted_record.id or gold_record.text != predicted_record.text:
            raise ValueError(Errors.E301.format(gold=gold_record.id, predicted=predicted_record.id))
        gold_set, predicted_set = set(gold_record.entities), set(predicted_record.entities)
        for entity in predicted_set:
            counts.setdefault(entity.label, Counter())["tp" if entity in gold_set else "fp"] += 1
        for entity in gold_set - predicted_set:
            counts.setdefault(entity.label, Counter())["fn"] += 1
    per_label = {label: PRF(c["tp"], c["fp"], c["fn"]) for label, c in counts.items()}
    overall = PRF(
        sum(p.tp for p in per_label.values()),
        sum(p.fp for p in per_label.values()),
        sum(p.fn for p in per_label.values()),
    )
    return NerScores(overall, per_label)


ERROR_KINDS = ("wrong_label", "wrong_boundary", "missed", "spurious")


@dataclass(frozen=True)
class EntityError:
    """A gold entity the prediction lacks (`false_negative`) or a predicted one the gold lacks."""

    entity: Entity
    side: str
    kind: str


def _error_kind(entity: Entity, others: Sequence[Entity], unmatched_kind: str) -> str:
    """`wrong_label` if an entity of the other side has the same span, `wrong_boundary` if one overlaps it."""
    if any((other.start, other.end) == (entity.start, entity.end) for other in others):
        return "wrong_label"
    if any(other.start < entity.end and entity.start < other.end for other in others):
        return "wrong_boundary"
    return unmatched_kind


def entity_errors(gold: Sequence[Entity], predicted: Sequence[Entity]) -> List[EntityError]:
    """Each strict-scoring error in one text, classified against the other side's unmatched entities.

    Every false negative is `wrong_label`, `wrong_boundary` or `missed`; every false positive is
    `wrong_label`, `wrong_boundary` or `spurious`, so the counts add up to the strict FN and FP.
    """
    gold_set, predicted_set = set(gold), set(predicted)
    false_negatives = sorted(gold_set - predicted_set)
    false_positives = sorted(predicted_set - gold_set)
    errors = [EntityError(e, "false_negative", _error_kind(e, false_positives, "missed")) for e in false_negatives]
    errors += [EntityError(e, "false_positive", _error_kind(e, false_negatives, "spurious")) for e in false_positives]
    return errors
