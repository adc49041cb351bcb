from __future__ import annotations

from pathlib import Path

import pytest

from spacy_bioselecttune.engine.answer_format import EMPTY_ANSWER, answer_for_record, build_prompt
from spacy_bioselecttune.engine.empty_answer_gate import empty_answer_probabilities, list_opening, opened_prompts
from spacy_bioselecttune.engine.encoding import encode_prompts
from spacy_bioselecttune.engine.generate import Generator
from spacy_bioselecttune.engine.loading import load_model
from spacy_bioselecttune.engine.logprobs import cache_keyword

LABELS = ["Disease", "Chemical"]


@pytest.fixture(scope="module")
def torn_model_dir(tiny_model_dir, fixture_records, answer_memorizer, tmp_path_factory) -> Path:
    """The tiny model fitted to answer the first fixture prompt `[]` twice as often as with its
    list, and every other prompt with its own answer only."""
    first, *others = fixture_records
    prompt = build_prompt(first.text, LABELS)
    pairs = [(prompt, EMPTY_ANSWER), (prompt, EMPTY_ANSWER), (prompt, answer_for_record(first))]
    pairs += [(build_prompt(r.text, LABELS), answer_for_record(r)) for r in others]
    return answer_memorizer(tiny_model_dir, pairs, tmp_path_factory.mktemp("tiny-torn"), steps=150, lr=1e-2)


def test_list_opening_is_where_the_empty_answer_and_a_list_part(tiny_model_dir):
    _, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    opening = list_opening(tokenizer)
    empty = tokenizer(EMPTY_ANSWER, add_special_tokens=False)["input_ids"]
    assert empty == opening.shared + [opening.close]
    assert opening.opened[: len(opening.shared)] == opening.shared and opening.opened[-1] != opening.close
    assert EMPTY_ANSWER.startswith(tokenizer.decode(opening.shared)) and opening.text.startswith("[")


def test_empty_answer_probability_is_the_next_token_probability_after_the_shared_tokens(torn_model_dir, fixture_records):
    import torch
    from transformers import DynamicCache

    model, tokenizer = load_model(str(torn_model_dir), device="cpu")
    prompts = [build_prompt(r.text, LABELS) for r in fixture_records]
    batched = empty_answer_probabilities(model, tokenizer, encode_prompts(tokenizer, prompts), batch_size=3)
    opening = list_opening(tokenizer)
    with torch.inference_mode():
        for prompt, probability in zip(prompts, batched):
            ids = torch.tensor([encode_prompts(tokenizer, [prompt])[0] + opening.shared])
            alone = model(input_ids=ids).logits[0, -1].float().softmax(-1)[opening.close].item()
            assert probability == pytest.approx(alone, abs=1e-4)
    prefix_ids = encode_prompts(tokenizer, [prompts[0]])[0][:20]
    with torch.inference_mode():
        prefix_cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([prefix_ids]), use_cache=True, **{cache_keyword(model): prefix_cache})
    after_prefix = empty_answer_probabilities(model, tokenizer, encode_prompts(tokenizer, prompts), batch_size=2, prefix=(prefix_ids, prefix_cache))
    assert after_prefix == pytest.approx(batched, abs=1e-4)
    with pytest.raises(ValueError, match="prefix"):
        empty_answer_probabilities(model, tokenizer, encode_prompts(tokenizer, prompts), prefix=([prefix_ids[0] + 1], prefix_cache))
    assert 0.3 < batched[0] < 0.95  # fitted to close at once two times in three
    for record, probability in zip(fixture_records[1:], batched[1:]):
        assert probability < 0.1 if record.entities else probability > 0.95


@pytest.mark.parametrize("decoding", ["dynamic", "continuous", "static-continuous"])
def test_an_unsure_empty_answer_is_generated_again_as_a_list(torn_model_dir, fixture_records, decoding):
    prompts = [build_prompt(r.text, LABELS) for r in fixture_records]
    greedy = Generator(str(torn_model_dir), device="cpu", batch_size=2, max_new_tokens=60, decoding=decoding)
    assert greedy.generate(prompts)[0] == EMPTY_ANSWER
    sure = Generator(str(torn_model_dir), device="cpu", batch_size=2, max_new_tokens=60, decoding=decoding, empty_answer_threshold=0.3)
    assert sure.generate(prompts)[0] == EMPTY_ANSWER and sure.times.reopened_answers == 0
    gated = Generator(str(torn_model_dir), device="cpu", batch_size=2, max_new_tokens=60, decoding=decoding, empty_answer_threshold=0.95)
    outputs = gated.generate(prompts)
    assert outputs == [answer_for_record(r) for r in fixture_records]
    assert gated.times.reopened_answers == 1


def test_the_threshold_must_be_a_probability(tiny_model_dir):
    for value in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="empty_answer_threshold"):
            Generator(str(tiny_model_dir), device="cpu", empty_answer_threshold=value)


class MergingTokenizer:
    """The tiny tokenizer, except that a text ending in a space and the list opening gets one
    merged token for the two, as BPE tokenizers with a space-prefixed `[{"` would."""

    def __init__(self, tokenizer, merged_id: int) -> None:
        self.tokenizer, self.merged_id = tokenizer, merged_id

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, texts, add_special_tokens=False):
        encoded = self.tokenizer(texts, add_special_tokens=add_special_tokens)
        if isinstance(texts, str):
            return encoded
        opening = self.tokenizer.decode(list_opening(self.tokenizer).opened)
        ids = [row[:-2] + [self.merged_id] if text.endswith(" " + opening) else row for text, row in zip(texts, encoded["input_ids"])]
        return {"input_ids": ids}


def test_an_opening_the_tokenizer_would_merge_into_the_prompt_is_refused(tiny_model_dir):
    _, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    assert opened_prompts(tokenizer, ["Text: x\nAnswer:\n"])[0].endswith(list_opening(tokenizer).text)
    merging = MergingTokenizer(tokenizer, merged_id=7)
    assert opened_prompts(merging, ["Text: x\nAnswer:\n"])[0].endswith(list_opening(tokenizer).text)
    with pytest.raises(ValueError, match="tokenizes differently"):
        opened_prompts(merging, ["Text: x\nAnswer: "])
