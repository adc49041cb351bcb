import torch

from spacy_bioselecttune.engine.answer_format import build_prompt, draft_template, prompt_labels
from spacy_bioselecttune.engine.drafting import HISTORY_ROUNDING, PromptLookup
from spacy_bioselecttune.engine.parser import parse_answer


def _drafts(lookup, rows, width):
    tokens, counts = lookup.drafts(rows, width)
    return [row[:count] for row, count in zip(tokens.tolist(), counts.tolist())]


def test_a_draft_follows_the_latest_earlier_occurrence_of_the_last_token():
    lookup = PromptLookup(3, "cpu")
    lookup.start(slice(0, 3), [[1, 2, 3, 9, 2, 4, 5, 2], [1, 2, 3], [7, 8, 7, 8, 7]])
    # row 0: 2 last occurred before 4, 5, 2; row 1: 3 never occurred before; row 2: 7 before 8, 7
    assert _drafts(lookup, 3, 2) == [[4, 5], [], [8, 7]]
    assert _drafts(lookup, 3, 5) == [[4, 5, 2], [], [8, 7]]  # a draft ends with the row's tokens
    assert _drafts(lookup, 2, 1) == [[4], []]


def test_chosen_tokens_extend_the_rows_and_rows_move():
    lookup = PromptLookup(3, "cpu")
    lookup.start(slice(0, 2), [[1, 2, 3], [4, 5]])
    lookup.append(torch.tensor([[2, 7, 7], [6, 4, 9]]), torch.tensor([1, 2]))  # only the counted tokens stay
    assert lookup.lengths[:2].tolist() == [4, 4]
    assert _drafts(lookup, 2, 3) == [[3, 2], [5, 6, 4]]
    lookup.move(torch.tensor([0]), torch.tensor([1]))
    assert _drafts(lookup, 1, 3) == [[5, 6, 4]]
    lookup.start(slice(2, 3), [list(range(1, HISTORY_ROUNDING + 2))])  # the buffer grows
    assert lookup.history.shape[1] == 2 * HISTORY_ROUNDING and lookup.lengths.tolist() == [4, 4, HISTORY_ROUNDING + 1]


def test_prompt_labels_read_back_what_build_prompt_asks_for():
    assert prompt_labels(build_prompt("Gout and TNF.", ["Chemical", "Disease"])) == ["Chemical", "Disease"]
    assert prompt_labels(build_prompt("Text: of the types X.", ["Gene"])) == ["Gene"]
    assert prompt_labels("Find the diseases in: gout.") is None


def test_the_draft_template_is_an_answer_of_the_format():
    template = draft_template(["Chemical", "Disease"])
    assert [(m.label, m.name) for m in parse_answer(template, ["Chemical", "Disease"]).mentions] == [
        ("Chemical", "x y"), ("Chemical", "x"), ("Disease", "x y"), ("Disease", "x")]


def test_the_buffer_grows_only_for_the_rows_in_use():
    lookup = PromptLookup(2, "cpu")
    lookup.start(slice(0, 2), [[1] * (HISTORY_ROUNDING - 4), [2, 3]])
    lookup.move(torch.tensor([0]), torch.tensor([1]))  # the long row has left; one row is in use
    for _ in range(2 * HISTORY_ROUNDING):
        lookup.append(torch.tensor([[3, 2, 3]]), torch.tensor([2]))
    assert lookup.lengths[0] == 2 + 4 * HISTORY_ROUNDING and lookup.history.shape[1] == 5 * HISTORY_ROUNDING
    assert _drafts(lookup, 1, 3) == [[3, 2]]  # the latest earlier 2 is followed by 3 and the last 2
