from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bioselecttune.engine.metrics import PRF, empty_answers, entity_errors, paired_bootstrap, score_records, seed_bootstrap
from spacy_bioselecttune.engine.records import Entity, Record

TEXT = "Aspirin and cisplatin cause renal failure in mice"
WORDS = TEXT.split(" ")
WORD_SPANS = []
_offset = 0
for _word in WORDS:
    WORD_SPANS.append((_offset, _offset + len(_word)))
    _offset += len(_word) + 1


def test_score_records_counts_exact_matches_only():
    gold = [Record("a", TEXT, (Entity(0, 7, "Chemical"), Entity(28, 41, "Disease")))]
    predicted = [Record("a", TEXT, (Entity(0, 7, "Chemical"), Entity(34, 41, "Disease"), Entity(12, 21, "Chemical")))]
    scores = score_records(gold, predicted)
    assert scores.overall == PRF(tp=1, fp=2, fn=1)
    assert scores.per_label["Chemical"] == PRF(tp=1, fp=1, fn=0)
    assert scores.per_label["Disease"] == PRF(tp=0, fp=1, fn=1)
    assert scores.overall.precision == pytest.approx(1 / 3)
    assert scores.overall.recall == pytest.approx(1 / 2)
    assert scores.overall.f1 == pytest.approx(0.4)


def test_score_records_wrong_label_is_a_miss():
    gold = [Record("a", TEXT, (Entity(0, 7, "Chemical"),))]
    predicted = [Record("a", TEXT, (Entity(0, 7, "Disease"),))]
    scores = score_records(gold, predicted)
    assert scores.overall == PRF(tp=0, fp=1, fn=1)
    assert scores.to_dict()["ents_f"] == 0.0


def test_empty_answers_separate_silence_from_naming():
    chemical, disease = Entity(0, 7, "Chemical"), Entity(28, 41, "Disease")
    gold = [Record("a", TEXT, (chemical, disease)), Record("b", TEXT, (chemical,)), Record("c", TEXT), Record("d", TEXT)]
    predicted = [Record("a", TEXT, (chemical, Entity(12, 21, "Chemical"))), Record("b", TEXT), Record("c", TEXT), Record("d", TEXT, (disease,))]
    empty = empty_answers(gold, predicted)
    assert (empty.positive_sentences, empty.silent_on_positive, empty.negative_sentences, empty.silent_on_negative) == (2, 1, 2, 1)
    # Only sentence "a" is gold-positive with an answer: one of its two names found, one spurious.
    assert empty.answered == PRF(tp=1, fp=1, fn=1)
    assert empty.to_dict()["recall_where_answered"] == pytest.approx(0.5)
    assert score_records(gold, predicted).overall.recall == pytest.approx(1 / 3)


def test_empty_answers_checks_that_records_pair_up():
    with pytest.raises(ValueError):
        empty_answers([Record("a", TEXT)], [Record("b", TEXT)])


def test_score_records_empty_is_zero():
    scores = score_records([Record("a", TEXT)], [Record("a", TEXT)])
    assert scores.overall == PRF() and scores.per_label == {}
    assert scores.overall.f1 == 0.0


def test_score_records_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"\[E300\]"):
        score_records([Record("a", TEXT)], [])
    with pytest.raises(ValueError, match=r"\[E301\]"):
        score_records([Record("a", TEXT)], [Record("b", TEXT)])


entity_sets = st.lists(
    st.tuples(st.integers(0, len(WORDS) - 1), st.integers(1, 3), st.sampled_from(["Disease", "Chemical"])), max_size=4
)


def non_overlapping(choices) -> tuple:
    taken, result = set(), []
    for first, length, label in choices:
        words = set(range(first, min(first + length, len(WORDS))))
        if words & taken:
            continue
        taken |= words
        result.append(Entity(WORD_SPANS[min(words)][0], WORD_SPANS[max(words)][1], label))
    return tuple(sorted(result))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(entity_sets, entity_sets), min_size=1, max_size=4))
def test_score_records_agrees_with_spacy_get_ner_prf(pairs):
    import spacy
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    nlp = spacy.blank("en")
    gold, predicted, examples = [], [], []
    for index, (gold_choice, predicted_choice) in enumerate(pairs):
        gold.append(Record(str(index), TEXT, non_overlapping(gold_choice)))
        predicted.append(Record(str(index), TEXT, non_overlapping(predicted_choice)))
        docs = []
        for record in (predicted[-1], gold[-1]):
            doc = nlp.make_doc(TEXT)
            doc.ents = [doc.char_span(e.start, e.end, e.label) for e in record.entities]
            docs.append(doc)
        examples.append(Example(*docs))
    ours = score_records(gold, predicted).to_dict()
    theirs = get_ner_prf(examples)
    if theirs["ents_per_type"] is None:
        assert ours["ents_per_type"] == {}
        return
    assert ours["ents_p"] == pytest.approx(theirs["ents_p"])
    assert ours["ents_r"] == pytest.approx(theirs["ents_r"])
    assert ours["ents_f"] == pytest.approx(theirs["ents_f"])
    assert set(ours["ents_per_type"]) == set(theirs["ents_per_type"])
    for label, prf in theirs["ents_per_type"].items():
        assert ours["ents_per_type"][label]["f"] == pytest.approx(prf["f"])


def test_entity_errors_classifies_each_false_negative_and_positive():
    gold = [Entity(0, 7, "Chemical"), Entity(12, 21, "Chemical"), Entity(28, 41, "Disease"), Entity(45, 49, "Disease")]
    predicted = [Entity(0, 7, "Disease"), Entity(12, 21, "Chemical"), Entity(34, 41, "Disease"), Entity(22, 27, "Disease")]
    kinds = {(e.side, e.entity.start, e.kind) for e in entity_errors(gold, predicted)}
    assert kinds == {
        ("false_negative", 0, "wrong_label"), ("false_positive", 0, "wrong_label"),
        ("false_negative", 28, "wrong_boundary"), ("false_positive", 34, "wrong_boundary"),
        ("false_negative", 45, "missed"), ("false_positive", 22, "spurious"),
    }


@settings(max_examples=50, deadline=None)
@given(entity_sets, entity_sets)
def test_entity_errors_add_up_to_strict_false_negatives_and_positives(gold_choice, predicted_choice):
    gold, predicted = non_overlapping(gold_choice), non_overlapping(predicted_choice)
    scores = score_records([Record("a", TEXT, gold)], [Record("a", TEXT, predicted)]).overall
    errors = entity_errors(gold, predicted)
    assert sum(e.side == "false_negative" for e in errors) == scores.fn
    assert sum(e.side == "false_positive" for e in errors) == scores.fp


def _records(count: int, found: int) -> list:
    """`count` copies of TEXT with one Disease each; the first `found` keep it, the rest predict nothing."""
    return [Record(str(i), TEXT, (Entity(28, 41, "Disease"),) if i < found else ()) for i in range(count)]


def test_paired_bootstrap_of_a_system_against_itself_finds_no_difference():
    gold, predicted = _records(20, 20), _records(20, 12)
    result = paired_bootstrap(gold, predicted, predicted, samples=200)
    assert result.f1_a == result.f1_b == score_records(gold, predicted).overall.f1
    assert (result.delta, result.interval.low, result.interval.high, result.interval.share_not_better) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_separates_a_clearly_better_system_and_brackets_its_lead():
    gold = _records(40, 40)
    better, worse = _records(40, 36), _records(40, 10)
    result = paired_bootstrap(gold, better, worse, samples=500, seed=3)
    assert result.f1_a == pytest.approx(score_records(gold, better).overall.f1)
    assert result.f1_b == pytest.approx(score_records(gold, worse).overall.f1)
    assert 0.0 < result.interval.low < result.delta < result.interval.high
    assert result.interval.share_not_better == 0.0
    reverse = paired_bootstrap(gold, worse, better, samples=500, seed=3)
    assert reverse.interval.share_not_better == 1.0 and reverse.interval.high < 0.0


def test_paired_bootstrap_is_seeded_and_its_interval_widens_with_fewer_records():
    gold, a, b = _records(10, 10), _records(10, 7), _records(10, 5)
    assert paired_bootstrap(gold, a, b, seed=1) == paired_bootstrap(gold, a, b, seed=1)
    small = paired_bootstrap(gold, a, b, samples=400)
    large = paired_bootstrap(gold * 10, a * 10, b * 10, samples=400)
    assert small.delta == pytest.approx(large.delta)
    assert large.interval.high - large.interval.low < small.interval.high - small.interval.low


def test_paired_bootstrap_rejects_no_records_and_mismatched_predictions():
    with pytest.raises(ValueError, match="at least one gold record"):
        paired_bootstrap([], [], [])
    gold = _records(3, 3)
    shuffled = list(reversed(_records(3, 1)))
    with pytest.raises(ValueError, match="ids and texts must match"):
        paired_bootstrap(gold, gold, shuffled)
    with pytest.raises(ValueError, match="counts must match"):
        paired_bootstrap(gold, gold, gold[:2])
    with pytest.raises(ValueError, match="samples"):
        paired_bootstrap(gold, gold, gold, samples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(gold, gold, gold, confidence=1.0)


def test_paired_bootstrap_of_one_label_scores_that_label_alone():
    chemical = Entity(0, 7, "Chemical")
    gold = [Record(str(i), "Aspirin reduced the risk of colorectal cancer.", (chemical, Entity(28, 45, "Disease"))) for i in range(8)]
    only_chemicals = [Record(r.id, r.text, (chemical,)) for r in gold]
    on_chemicals = paired_bootstrap(gold, gold, only_chemicals, samples=100, label="Chemical")
    assert on_chemicals.f1_a == on_chemicals.f1_b == 1.0 and on_chemicals.interval.share_not_better == 1.0
    on_diseases = paired_bootstrap(gold, gold, only_chemicals, samples=100, label="Disease")
    assert (on_diseases.f1_a, on_diseases.f1_b, on_diseases.interval.share_not_better) == (1.0, 0.0, 0.0)
    overall = paired_bootstrap(gold, gold, only_chemicals, samples=100)
    assert overall.f1_b == pytest.approx(score_records(gold, only_chemicals).overall.f1)


def test_seed_bootstrap_reports_each_seeds_f1_and_separates_a_clearly_better_strategy():
    gold = _records(40, 40)
    better, worse = [_records(40, 36), _records(40, 33)], [_records(40, 10), _records(40, 14)]
    result = seed_bootstrap(gold, better, worse, samples=500, seed=3)
    assert result.f1s_a == tuple(pytest.approx(score_records(gold, run).overall.f1) for run in better)
    assert result.delta == pytest.approx(result.mean_a - result.mean_b) and result.mean_a == pytest.approx(sum(result.f1s_a) / 2)
    assert 0.0 < result.interval.low < result.delta < result.interval.high and result.interval.share_not_better == 0.0
    assert seed_bootstrap(gold, better, worse, samples=500, seed=3) == result


def test_seed_bootstrap_widens_its_interval_when_the_seeds_of_a_strategy_disagree():
    gold, other = _records(40, 40), [_records(40, 20), _records(40, 20)]
    agreeing = seed_bootstrap(gold, [_records(40, 20), _records(40, 20)], other, samples=400, seed=1)
    disagreeing = seed_bootstrap(gold, [_records(40, 32), _records(40, 8)], other, samples=400, seed=1)
    assert agreeing.delta == 0.0 and agreeing.interval.low <= 0.0 <= agreeing.interval.high
    assert disagreeing.interval.high - disagreeing.interval.low > 2 * (agreeing.interval.high - agreeing.interval.low)


def test_seed_bootstrap_scores_one_label_alone_and_rejects_a_strategy_without_runs():
    gold = [Record("a", TEXT, (Entity(0, 7, "Chemical"), Entity(28, 41, "Disease")))]
    found_chemical = [Record("a", TEXT, (Entity(0, 7, "Chemical"),))]
    result = seed_bootstrap(gold, [found_chemical], [gold], samples=50, label="Chemical")
    assert (result.f1s_a, result.f1s_b, result.delta) == ((1.0,), (1.0,), 0.0)
    with pytest.raises(ValueError, match="at least one run per strategy"):
        seed_bootstrap(gold, [gold], [])
