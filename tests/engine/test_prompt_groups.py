import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacy_bioselecttune.engine.answer_format import prompt_label_groups

TRAINED = [("Disease",), ("Chemical", "Disease"), ("Gene",)]


@pytest.mark.parametrize(
    "labels,expected",
    [
        (["Disease", "Chemical", "Gene"], [("Chemical", "Disease"), ("Gene",)]),
        (["Disease"], [("Disease",)]),
        (["Disease", "Chemical"], [("Chemical", "Disease")]),
        (["Gene", "Disease"], [("Gene",), ("Disease",)]),
        (["Chemical"], [("Chemical", "Disease")]),
        (["Chemical", "Gene"], [("Chemical", "Disease"), ("Gene",)]),
    ],
)
def test_groups_are_trained_label_lists_covering_the_request(labels, expected):
    assert prompt_label_groups(labels, TRAINED) == expected


def test_without_trained_lists_one_prompt_names_every_label():
    assert prompt_label_groups(["Gene", "Disease"]) == [("Gene", "Disease")]
    assert prompt_label_groups(["Gene", "Disease"], []) == [("Gene", "Disease")]


def test_groups_reject_bad_labels():
    with pytest.raises(ValueError, match="E005"):
        prompt_label_groups([], TRAINED)


@given(st.lists(st.sampled_from(["Disease", "Chemical", "Gene"]), min_size=1, unique=True))
def test_groups_cover_every_label_once_with_trained_lists_only(labels):
    groups = prompt_label_groups(labels, TRAINED)
    assert all(group in TRAINED for group in groups)
    asked = [label for group in groups for label in group if label in labels]
    assert sorted(asked) == sorted(labels)
    assert len(groups) == len(set(groups))
