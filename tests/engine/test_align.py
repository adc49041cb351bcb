from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bioselecttune.engine.align import align_mentions, find_occurrences
from spacy_bioselecttune.engine.records import Entity, Mention


def test_align_finds_every_occurrence():
    text = "Gout flares; gout again, and gouty arthritis."
    result = align_mentions(text, [Mention("Disease", "gout")])
    assert result.entities == [Entity(13, 17, "Disease")]
    spans = [text[e.start : e.end] for e in result.entities]
    assert spans == ["gout"]


def test_align_falls_back_to_case_insensitive_only_without_exact_match():
    text = "Gout flares. Gout again."
    result = align_mentions(text, [Mention("Disease", "gout")])
    assert [(e.start, e.end) for e in result.entities] == [(0, 4), (13, 17)]


def test_align_respects_word_edges():
    text = "CFTR mutations cause CF."
    result = align_mentions(text, [Mention("Disease", "CF")])
    assert result.entities == [Entity(21, 23, "Disease")]


def test_align_longest_wins_on_overlap():
    text = "colorectal cancer risk"
    result = align_mentions(text, [Mention("Disease", "cancer"), Mention("Disease", "colorectal cancer")])
    assert result.entities == [Entity(0, 17, "Disease")]
    assert result.unmatched == []


def test_align_reports_hallucinated_names():
    result = align_mentions("Aspirin helps.", [Mention("Chemical", "ibuprofen"), Mention("Chemical", "Aspirin")])
    assert result.unmatched == [Mention("Chemical", "ibuprofen")]
    assert result.entities == [Entity(0, 7, "Chemical")]


def test_align_matches_across_whitespace_runs():
    text = "renal  failure\tand more"
    assert find_occurrences(text, "renal failure") == [(0, 14)]


def test_align_handles_regex_characters_and_unicode():
    text = "IL-2 (α-chain) and [Ca2+]i rose."
    result = align_mentions(text, [Mention("Gene", "IL-2 (α-chain)"), Mention("Chemical", "[Ca2+]i")])
    assert [text[e.start : e.end] for e in result.entities] == ["IL-2 (α-chain)", "[Ca2+]i"]


@given(st.text(max_size=80), st.lists(st.text(min_size=1, max_size=12), max_size=5))
@settings(max_examples=300)
def test_align_spans_slice_back_and_never_overlap(text, names):
    result = align_mentions(text, [Mention("Disease", name) for name in names])
    previous_end = -1
    for ent in result.entities:
        assert ent.start >= previous_end
        previous_end = ent.end
        piece = text[ent.start : ent.end]
        assert any(" ".join(piece.split()).casefold() == " ".join(n.split()).casefold() for n in names)
