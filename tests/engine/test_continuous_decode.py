import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from spacy_bioselecttune.engine.continuous_decode import SlotBatch, supports_joined_rows, width_groups
from spacy_bioselecttune.engine.logprobs import cache_keyword
from spacy_bioselecttune.engine.static_decode import CACHE_ROUNDING

CONFIG = LlamaConfig(num_hidden_layers=2, num_key_value_heads=1, num_attention_heads=2, hidden_size=8,
                     intermediate_size=16, vocab_size=40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlamaForCausalLM(CONFIG).eval()


def _padded_cost(widths, starts, call_tokens):
    ends = starts[1:] + [len(widths)]
    return sum((end - start) * widths[start] + call_tokens for start, end in zip(starts, ends))


@given(st.lists(st.integers(1, 30), min_size=1, max_size=8), st.integers(0, 40))
def test_width_groups_minimise_padding_plus_calls(widths, call_tokens):
    widths = sorted(widths, reverse=True)
    starts = width_groups(widths, call_tokens)
    assert starts[0] == 0 and starts == sorted(set(starts))
    every_split = ([0, *cut] for size in range(len(widths)) for cut in itertools.combinations(range(1, len(widths)), size))
    assert _padded_cost(widths, starts, call_tokens) == min(_padded_cost(widths, s, call_tokens) for s in every_split)


def test_width_groups_trade_padding_against_calls():
    assert width_groups([10, 9, 9, 3, 3], 0) == [0, 1, 3]
    assert width_groups([10, 9, 9, 3, 3], 5) == [0, 3]
    assert width_groups([10, 9, 9, 3, 3], 1000) == [0]


def _reference(model, ids):
    """Each layer's keys for `ids` run alone, and the greedy next token."""
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=torch.tensor([ids]), use_cache=True, **{cache_keyword(model): cache}).logits
    return [layer.keys[0] for layer in cache.layers], int(logits[0, -1].argmax())


def _greedy(model, ids, count):
    """The next `count` greedy tokens after `ids`, one forward pass each."""
    ids = list(ids)
    for _ in range(count):
        ids.append(_reference(model, ids)[1])
    return ids[-count:]


def _assert_row_holds(batch, row, ids, model, at_write_slot=True):
    """Row `row` holds the keys of `ids` in its real slots, the last just before the write slot
    (unless a draft was rejected after it), and their next token."""
    keys, token = _reference(model, ids)
    real = batch.mask[row, : batch.length].bool()
    assert int(real.sum()) == len(ids) and (bool(real[-1]) or not at_write_slot)
    for layer, expected in zip(batch.keys, keys):
        torch.testing.assert_close(layer[row, :, : batch.length][:, real], expected)
    assert int(batch.tokens[row]) == token


@torch.inference_mode()
def test_slot_batch_prefills_steps_and_frees_rows_like_separate_runs(model):
    prompts = [[5, 6, 7], [5, 6, 7, 8, 9, 10], [5, 6, 7, 8]]
    batch = SlotBatch(model, 4, cache_keyword(model))
    batch.admit(prompts, [10, 11, 12], 0, None, pad_id=0, pass_tokens=0)
    assert batch.prompts == [11, 12, 10] and batch.counts == [0, 0, 0]  # widest first
    assert batch.length == 6 and batch.mask[:3, :6].tolist() == [[1] * 6, [0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]]
    fed = {11: prompts[1], 12: prompts[2], 10: prompts[0]}
    for row, prompt in enumerate(batch.prompts):
        _assert_row_holds(batch, row, fed[prompt], model)
    fed = {prompt: fed[prompt] + [int(batch.tokens[row])] for row, prompt in enumerate(batch.prompts)}
    batch.step()
    assert batch.length == 7
    for row, prompt in enumerate(batch.prompts):
        _assert_row_holds(batch, row, fed[prompt], model)
    batch.remove([0])  # the last row takes the freed place, and the padding the rows shared goes
    assert batch.prompts == [10, 12] and batch.length == 5
    for row, prompt in enumerate(batch.prompts):
        _assert_row_holds(batch, row, fed[prompt], model)
    batch.admit([[5, 6]], [13], 0, None, pad_id=0, pass_tokens=0)  # a shorter prompt ends at the write slot
    fed[13] = [5, 6]
    assert batch.prompts == [10, 12, 13] and batch.length == 5
    for row, prompt in enumerate(batch.prompts):
        _assert_row_holds(batch, row, fed[prompt], model)


@torch.inference_mode()
def test_slot_batch_reuses_the_shared_prefix_grows_its_slots_and_drops_padding(model):
    prefix = [5, 6, 7, 8]
    prefix_cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix]), use_cache=True, **{cache_keyword(model): prefix_cache})
    long_prompt = prefix + [9 + i % 30 for i in range(CACHE_ROUNDING)]
    batch = SlotBatch(model, 2, cache_keyword(model))
    # one prefill for both: the short prompt's suffix is left-padded after its copy of the prefix
    batch.admit([prefix + [9], long_prompt], [0, 1], len(prefix), prefix_cache, pad_id=0, pass_tokens=1000)
    assert batch.capacity > CACHE_ROUNDING and batch.length == len(long_prompt)
    _assert_row_holds(batch, 0, long_prompt, model)
    _assert_row_holds(batch, 1, prefix + [9], model)
    batch.remove([0])  # the long prompt's slots go, and with them the padding inside the short one
    assert batch.length == len(prefix) + 1
    _assert_row_holds(batch, 0, prefix + [9], model)
    batch.remove([0])
    batch.admit([prefix + [10, 11]], [2], len(prefix), prefix_cache, pad_id=0, pass_tokens=0)
    assert batch.prompts == [2] and batch.length == len(prefix) + 2  # an empty batch starts afresh
    _assert_row_holds(batch, 0, prefix + [10, 11], model)


def test_only_full_attention_caches_can_join_rows():
    assert supports_joined_rows(DynamicCache(config=CONFIG))
    sliding = LlamaConfig(**{**CONFIG.to_dict(), "sliding_window": 2, "layer_types": ["sliding_attention", "full_attention"]})
    assert not supports_joined_rows(DynamicCache(config=sliding))


@torch.inference_mode()
def test_a_drafting_step_keeps_the_greedy_tokens_and_drops_rejected_slots(model):
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    first, second = _greedy(model, prompts[0], 4), _greedy(model, prompts[1], 1)
    # row 0's context holds its greedy answer after an earlier copy of its first token; row 1's, a wrong guess
    contexts = [prompts[0] + first[:3], prompts[1] + second + [(second[0] + 1) % CONFIG.vocab_size] * 3]
    batch = SlotBatch(model, 2, cache_keyword(model), drafting=True)
    batch.admit(prompts, [0, 1], 0, None, pad_id=0, pass_tokens=0, contexts=contexts)
    assert batch.tokens.tolist() == [first[0], second[0]]
    chosen, counts = batch.step(3)
    assert chosen.shape == (2, 4) and batch.drafted == 3 + 3 and batch.accepted == counts.sum() - 2
    assert counts[0] >= 3 and counts[1] == 1  # the model agrees with the answer's tokens, not with the guess
    assert chosen[0, : counts[0]].tolist() == _greedy(model, prompts[0] + first[:1], int(counts[0]))
    assert chosen[1, :1].tolist() == _greedy(model, prompts[1] + second, 1)
    for row, prompt in enumerate(prompts):
        fed = prompt + _greedy(model, prompt, int(counts[row]))
        _assert_row_holds(batch, row, fed, model, at_write_slot=bool(counts[row] == 4))
    batch.step()  # a plain step after rejected drafts: attends past their emptied slots
    for row, prompt in enumerate(prompts):
        _assert_row_holds(batch, row, prompt + _greedy(model, prompt, int(counts[row]) + 1), model)
