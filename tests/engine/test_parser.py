import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bioselecttune.engine.answer_format import render_answer
from spacy_bioselecttune.engine.parser import item_key, parse_answer
from spacy_bioselecttune.engine.records import Mention

LABELS = ["Disease", "Chemical"]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('[{"entity": "Disease", "name": "cystic fibrosis"}]', [("Disease", "cystic fibrosis")]),
        ("[]", []),
        ('```json\n[{"entity": "Chemical", "name": "aspirin"}]\n```', [("Chemical", "aspirin")]),
        ('[{"entity": "Disease", "name": "gout"}] and then some text [1, 2]', [("Disease", "gout")]),
        ("[{'entity': 'Disease', 'name': 'gout'}]", [("Disease", "gout")]),
        ('[{"entity": "disease", "name": " gout "}]', [("Disease", "gout")]),
        ('[{"entity": "Disease", "name": "gout"}, {"entity": "Disease", "name": "gout"}]', [("Disease", "gout")]),
        ('[{"entity": "Gene", "name": "BRCA1"}, {"entity": "Disease", "name": "gout"}]', [("Disease", "gout")]),
        ('[{"entity": "Disease", "name": "gout"}, {"entity": "Chemical", "name": "asp', [("Disease", "gout")]),
        ('[{"entity": "Disease", "name": "a ] tricky [ name"}]', [("Disease", "a ] tricky [ name")]),
        ('[{"entity": "Disease", "name": "say \\"no\\""}]', [("Disease", 'say "no"')]),
        ('[{"entity": "Disease"}, "x", 3, {"entity": "Disease", "name": ""}]', []),
    ],
)
def test_parse_answer_reads_tolerantly(raw, expected):
    result = parse_answer(raw, LABELS)
    assert [(m.label, m.name) for m in result.mentions] == expected


def test_parse_answer_names_its_problems():
    result = parse_answer('[{"entity": "Gene", "name": "BRCA1"}, {"entity": "Disease", "name": "gout"}, {"entity": "Disease", "name": "gout"}', LABELS)
    assert result.ok
    assert any("unknown label 'Gene'" in p for p in result.problems)
    assert any("duplicate" in p for p in result.problems)
    assert "truncated list" in result.problems


@pytest.mark.parametrize("raw", ["", "I cannot help with that.", "[{\"entity\": \"Dis", "[not json at all", None])
def test_parse_answer_garbage_gives_nothing(raw):
    result = parse_answer(raw, LABELS)
    assert result.mentions == []
    assert not result.ok


@given(st.text())
@settings(max_examples=300)
def test_parse_answer_never_raises_and_never_invents_labels(raw):
    result = parse_answer(raw, LABELS)
    assert all(m.label in LABELS for m in result.mentions)
    assert all(m.name and m.name == m.name.strip() for m in result.mentions)


names = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() == s and s)


@given(st.lists(st.tuples(st.sampled_from(LABELS), names), max_size=6))
@settings(max_examples=200)
def test_parse_answer_inverts_render_answer(pairs):
    mentions = list(dict.fromkeys(Mention(label, name) for label, name in pairs))
    result = parse_answer(render_answer(mentions), LABELS)
    assert result.ok
    assert result.mentions == mentions


@pytest.mark.parametrize(
    "fragment, expected",
    [
        ('{"entity": " Disease", "name": " fever "}', ("disease", "fever")),
        ("{'type': 'GENE', 'text': 'BRCA1'}", ("gene", "BRCA1")),
        ('{"entity": "Disease", "name": "  "}', None),
        ('{"entity": "Disease"}', None),
        ('{"entity": "Disease", "name": "fev', None),
    ],
)
def test_item_key_reads_one_item_as_the_parser_does(fragment, expected):
    assert item_key(fragment) == expected


def test_backticks_inside_a_name_are_kept():
    result = parse_answer('```json\n[{"entity": "Disease", "name": "```"}]\n```', LABELS)
    assert result.ok and result.mentions == [Mention("Disease", "```")]
