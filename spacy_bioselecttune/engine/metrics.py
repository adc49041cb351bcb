"""Strict entity-level precision, recall and F1 on Records, overall and per label.

A predicted entity counts as correct only if its start, end and label all equal a gold
entity's. The numbers agree with spaCy's `get_ner_prf` on token-aligned spans. Each error
is also classified (wrong label, wrong boundary, missed, spurious) for error analysis. Only the
bootstrap over seeds needs numpy (imported when called); the rest is stdlib.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

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


def _entity_sets(
    gold: Sequence[Record], predicted: Sequence[Record], label: Optional[str] = None
) -> Iterator[Tuple[Set[Entity], Set[Entity]]]:
    """The gold and predicted entity sets of each record (only `label`'s when given), paired by
    position and checked by id and text."""
    if len(gold) != len(predicted):
        raise ValueError(Errors.E300.format(gold=len(gold), predicted=len(predicted)))
    for gold_record, predicted_record in zip(gold, predicted):
        if gold_record.id != predicted_record.id or gold_record.text != predicted_record.text:
            raise ValueError(Errors.E301.format(gold=gold_record.id, predicted=predicted_record.id))
        yield (
            {e for e in gold_record.entities if label in (None, e.label)},
            {e for e in predicted_record.entities if label in (None, e.label)},
        )


def score_records(gold: Sequence[Record], predicted: Sequence[Record]) -> NerScores:
    """Strict P/R/F1 of `predicted` against `gold`, paired by position and checked by id and text."""
    counts: Dict[str, Counter] = {}
    for gold_set, predicted_set in _entity_sets(gold, predicted):
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


@dataclass(frozen=True)
class EmptyAnswers:
    """Where a model found no entity at all, and how well it did where it found some.

    It separates the decision "this sentence has entities" from naming them: a model that answers
    `[]` too often loses recall on every sentence it goes silent on, while `answered` (strict
    scores on the gold-positive sentences where it found at least one entity) stays put.
    """

    positive_sentences: int
    silent_on_positive: int
    negative_sentences: int
    silent_on_negative: int
    answered: PRF

    def to_dict(self) -> Dict[str, object]:
        return {
            "positive_sentences": self.positive_sentences,
            "silent_on_positive": self.silent_on_positive,
            "negative_sentences": self.negative_sentences,
            "silent_on_negative": self.silent_on_negative,
            "recall_where_answered": self.answered.recall,
            "precision_where_answered": self.answered.precision,
        }


def empty_answers(gold: Sequence[Record], predicted: Sequence[Record]) -> EmptyAnswers:
    """Count the sentences, with and without gold entities, on which `predicted` found none."""
    silent_on_positive = silent_on_negative = positives = 0
    tp = fp = fn = 0
    for gold_set, predicted_set in _entity_sets(gold, predicted):
        positives += bool(gold_set)
        if not predicted_set:
            silent_on_positive += bool(gold_set)
            silent_on_negative += not gold_set
        elif gold_set:
            tp += len(gold_set & predicted_set)
            fp += len(predicted_set - gold_set)
            fn += len(gold_set - predicted_set)
    return EmptyAnswers(positives, silent_on_positive, len(gold) - positives, silent_on_negative, PRF(tp, fp, fn))


@dataclass(frozen=True)
class BootstrapInterval:
    """Where the resampled differences A minus B fall: the middle `confidence` share lies in
    [low, high], and `share_not_better` of them are not above zero (a one-sided p-value for
    "A beats B")."""

    low: float
    high: float
    share_not_better: float
    samples: int
    confidence: float

    @classmethod
    def of(cls, deltas: Sequence[float], confidence: float) -> "BootstrapInterval":
        """Summarise the resampled differences `deltas`."""
        ordered = sorted(deltas)
        tail = (1.0 - confidence) / 2
        return cls(
            float(ordered[int(tail * len(ordered))]),
            float(ordered[min(len(ordered) - 1, int((1.0 - tail) * len(ordered)))]),
            sum(delta <= 0 for delta in ordered) / len(ordered),
            len(ordered),
            confidence,
        )

    def interval_dict(self) -> Dict[str, float]:
        return {
            "low": self.low,
            "high": self.high,
            "share_not_better": self.share_not_better,
            "samples": self.samples,
            "confidence": self.confidence,
        }


def _check_bootstrap(gold: Sequence[Record], samples: int, confidence: float) -> None:
    """Refuse no gold records, no resamples, or a confidence outside (0, 1)."""
    if not gold:
        raise ValueError(Errors.E307)
    if samples < 1:
        raise ValueError(Errors.E010.format(name="samples", value=samples, reason="at least one resample"))
    if not 0.0 < confidence < 1.0:
        raise ValueError(Errors.E010.format(name="confidence", value=confidence, reason="a share between 0 and 1"))


@dataclass(frozen=True)
class PairedBootstrap:
    """Strict F1 of two systems on the same records, and a bootstrap interval of their difference."""

    f1_a: float
    f1_b: float
    interval: BootstrapInterval

    @property
    def delta(self) -> float:
        """F1 of A minus F1 of B on all records."""
        return self.f1_a - self.f1_b

    def to_dict(self) -> Dict[str, float]:
        return {"f1_a": self.f1_a, "f1_b": self.f1_b, "delta": self.delta, **self.interval.interval_dict()}


def paired_bootstrap(
    gold: Sequence[Record],
    predicted_a: Sequence[Record],
    predicted_b: Sequence[Record],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    label: Optional[str] = None,
) -> PairedBootstrap:
    """Compare two systems' strict F1 by resampling records with replacement (paired bootstrap).

    Each resample draws len(gold) records and scores both systems on the same draw; the
    interval summarises the F1 differences (A minus B). With `label`, both systems are scored
    on that label's entities only.
    """
    _check_bootstrap(gold, samples, confidence)
    counts = []
    pairs = zip(_entity_sets(gold, predicted_a, label), _entity_sets(gold, predicted_b, label))
    for (gold_a, set_a), (_, set_b) in pairs:
        tp_a, tp_b = len(gold_a & set_a), len(gold_a & set_b)
        counts.append((tp_a, len(set_a) - tp_a, len(gold_a) - tp_a, tp_b, len(set_b) - tp_b, len(gold_a) - tp_b))

    def f1_pair(rows: Sequence[Tuple[int, ...]]) -> Tuple[float, float]:
        sums = [sum(column) for column in zip(*rows)]
        return PRF(*sums[:3]).f1, PRF(*sums[3:]).f1

    f1_a, f1_b = f1_pair(counts)
    rng = random.Random(seed)
    deltas = []
    for _ in range(samples):
        a, b = f1_pair(rng.choices(counts, k=len(counts)))
        deltas.append(a - b)
    return PairedBootstrap(f1_a, f1_b, BootstrapInterval.of(deltas, confidence))


@dataclass(frozen=True)
class SeedBootstrap:
    """Strict F1 of two strategies, each trained once per seed and evaluated on the same records,
    and a bootstrap interval of the difference in their mean F1."""

    f1s_a: Tuple[float, ...]
    f1s_b: Tuple[float, ...]
    interval: BootstrapInterval

    @property
    def mean_a(self) -> float:
        return sum(self.f1s_a) / len(self.f1s_a)

    @property
    def mean_b(self) -> float:
        return sum(self.f1s_b) / len(self.f1s_b)

    @property
    def delta(self) -> float:
        """Mean F1 of A minus mean F1 of B over their seeds, on all records."""
        return self.mean_a - self.mean_b

    def to_dict(self) -> Dict[str, object]:
        return {
            "f1s_a": list(self.f1s_a),
            "f1s_b": list(self.f1s_b),
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "delta": self.delta,
            **self.interval.interval_dict(),
        }


def seed_bootstrap(
    gold: Sequence[Record],
    runs_a: Sequence[Sequence[Record]],
    runs_b: Sequence[Sequence[Record]],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    label: Optional[str] = None,
) -> SeedBootstrap:
    """Compare two training strategies when each was run with several seeds (two-level bootstrap).

    `runs_a` and `runs_b` hold one list of predicted Records per seed. Each resample draws the
    records with replacement (the same draw for every run, as in `paired_bootstrap`) and, for each
    strategy independently, as many seeds as it has, with replacement; the statistic is the mean
    F1 over the drawn seeds of A minus that of B. So the interval covers both the test-set
    sampling and the run-to-run variation of training. With a handful of seeds the seed level is
    coarse: three seeds allow only ten distinct seed multisets per strategy.
    """
    import numpy

    _check_bootstrap(gold, samples, confidence)
    if not runs_a or not runs_b:
        raise ValueError(Errors.E010.format(name="runs", value=(len(runs_a), len(runs_b)), reason="at least one run per strategy"))
    counts = numpy.zeros((len(runs_a) + len(runs_b), len(gold), 3), dtype=numpy.int64)
    for run_index, run in enumerate([*runs_a, *runs_b]):
        for record_index, (gold_set, predicted_set) in enumerate(_entity_sets(gold, run, label)):
            tp = len(gold_set & predicted_set)
            counts[run_index, record_index] = (tp, len(predicted_set) - tp, len(gold_set) - tp)

    def f1(sums):
        tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
        denominator = 2 * tp + fp + fn
        return numpy.where(denominator > 0, 2 * tp / numpy.maximum(denominator, 1), 0.0)

    f1s = [float(value) for value in f1(counts.sum(axis=1))]
    rng = numpy.random.default_rng(seed)
    weights = rng.multinomial(len(gold), numpy.full(len(gold), 1.0 / len(gold)), size=samples)
    resampled = f1(numpy.einsum("sn,rnc->src", weights, counts))
    seeds_a = rng.integers(0, len(runs_a), size=(samples, len(runs_a)))
    seeds_b = len(runs_a) + rng.integers(0, len(runs_b), size=(samples, len(runs_b)))
    rows = numpy.arange(samples)[:, None]
    deltas = resampled[rows, seeds_a].mean(axis=1) - resampled[rows, seeds_b].mean(axis=1)
    return SeedBootstrap(tuple(f1s[: len(runs_a)]), tuple(f1s[len(runs_a) :]), BootstrapInterval.of(deltas.tolist(), confidence))

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
