from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacy_bioselecttune.engine.sentences import split_long, split_sentences


def texts_of(text: str, spans):
    return [text[start:end] for start, end in spans]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Aspirin helps. Cisplatin harms.", ["Aspirin helps.", "Cisplatin harms."]),
        ("  One.\n\nTwo?  Three!  ", ["One.", "Two?", "Three!"]),
        ("E. coli was grown. It died.", ["E. coli was grown.", "It died."]),
        ("As shown by Chen et al. The effect held.", ["As shown by Chen et al. The effect held."]),
        ("Drugs (e.g. Aspirin) help. 5 mice died.", ["Drugs (e.g. Aspirin) help.", "5 mice died."]),
        ("The dose was 2.5 mg. Then it stopped.", ["The dose was 2.5 mg.", "Then it stopped."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Title line\nBody text here.", ["Title line", "Body text here."]),
        ("lower case. next sentence", ["lower case. next sentence"]),
        ("", []),
        (" \n\t ", []),
    ],
)
def test_split_sentences_cases(text, expected):
    assert texts_of(text, split_sentences(text)) == expected


@given(st.text(alphabet=st.sampled_from(list("ab .?!\n\tAZ9(\"e")), max_size=80))
def test_split_sentences_covers_all_non_space_text_in_order(text):
    spans = split_sentences(text)
    assert all(start < end for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert all(not text[s].isspace() and not text[e - 1].isspace() for s, e in spans)
    assert "".join("".join(text[s:e].split()) for s, e in spans) == "".join(text.split())


def test_split_long_cuts_at_whitespace():
    text = "alpha beta gamma delta"
    assert texts_of(text, split_long(text, 0, len(text), 11)) == ["alpha beta", "gamma delta"]


def test_split_long_cuts_words_longer_than_the_limit():
    text = "x" * 25
    assert texts_of(text, split_long(text, 0, 25, 10)) == ["x" * 10, "x" * 10, "x" * 5]


@given(st.text(alphabet=st.sampled_from(list("ab \n\u00e9\u4e2d")), max_size=120), st.integers(1, 30))
def test_split_long_pieces_fit_and_keep_all_text(text, max_chars):
    pieces = split_long(text, 0, len(text), max_chars)
    assert all(0 < end - start <= max_chars for start, end in pieces)
    assert "".join("".join(text[s:e].split()) for s, e in pieces) == "".join(text.split())
