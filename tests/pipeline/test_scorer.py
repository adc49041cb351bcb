from __future__ import annotations

import pytest
import spacy
from spacy.training import Example

from spacy_bioselecttune.pipeline.scorer import COUNT_KEYS, USER_DATA_KEY, score_bioselecttune

TEXT = "Aspirin reduced the risk of colorectal cancer ."


def example(nlp, gold, predicted, counts=None) -> Example:
    docs = []
    for spans in (predicted, gold):
        doc = nlp.make_doc(TEXT)
        doc.ents = [doc.char_span(start, end, label) for start, end, label in spans]
        docs.append(doc)
    if counts:
        docs[0].user_data[USER_DATA_KEY] = dict(counts)
    return Example(*docs)


def test_scorer_is_registered_by_entry_point():
    scorer = spacy.registry.scorers.get("bioselecttune.Scorer.v1")()
    assert scorer is score_bioselecttune


def test_scorer_gives_spacy_prf_and_summed_counts():
    nlp = spacy.blank("en")
    gold = [(0, 7, "Chemical"), (28, 45, "Disease")]
    examples = [
        example(nlp, gold, [(0, 7, "Chemical")], {"sentences": 1, "parse_failures": 1}),
        example(nlp, gold, [(0, 7, "Chemical"), (39, 45, "Disease")], {"sentences": 2, "dropped_names": 3}),
    ]
    scores = score_bioselecttune(examples)
    assert scores["ents_p"] == pytest.approx(2 / 3)
    assert scores["ents_r"] == pytest.approx(2 / 4)
    assert scores["ents_per_type"]["Chemical"]["f"] == pytest.approx(1.0)
    assert scores["ents_per_type"]["Disease"]["f"] == pytest.approx(0.0)
    assert scores["bioselecttune_sentences"] == 3
    assert scores["bioselecttune_parse_failures"] == 1
    assert scores["bioselecttune_dropped_names"] == 3
    assert all(f"bioselecttune_{key}" in scores for key in COUNT_KEYS)


def test_scorer_reports_zero_counts_without_component_data():
    nlp = spacy.blank("en")
    scores = score_bioselecttune([example(nlp, [], [])])
    assert scores["ents_f"] is None
    assert scores["bioselecttune_parse_failures"] == 0
