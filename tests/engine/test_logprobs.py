from __future__ import annotations

import pytest

from spacy_bioselecttune.engine.answer_format import answer_for_record, build_prompt
from spacy_bioselecttune.engine.encoding import EncodedExample, encode_example
from spacy_bioselecttune.engine.logprobs import (
    answer_token_loss_sums,
    answer_token_losses,
    collate,
    prefix_cache,
    shared_prompt_prefix,
)

LABELS = ["Disease", "Chemical"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from spacy_bioselecttune.engine.loading import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def _examples(tokenizer, records, with_prompt=True):
    return [
        encode_example(tokenizer, build_prompt(r.text, LABELS) if with_prompt else "", answer_for_record(r))
        for r in records
    ]


def _reference_losses(model, examples):
    """Per-example mean answer-token loss from full logits, one example at a time."""
    import torch

    return torch.stack([_reference_token_losses(model, example).mean() for example in examples])


def _reference_token_losses(model, example):
    """One example's answer-token losses from its full logits."""
    import torch

    ids = torch.tensor([example.input_ids])
    logits = model(input_ids=ids).logits[0, :-1]
    start = max(example.answer_start, 1)
    return torch.nn.functional.cross_entropy(logits[start - 1 :], ids[0, start:], reduction="none")


@pytest.mark.parametrize("with_prompt", [True, False])
def test_answer_token_losses_match_full_logits(model_and_tokenizer, fixture_records, with_prompt):
    import torch

    model, tokenizer = model_and_tokenizer
    examples = _examples(tokenizer, fixture_records, with_prompt)
    with torch.no_grad():
        losses = answer_token_losses(model, collate(examples, tokenizer.pad_token_id))
        expected = _reference_losses(model, examples)
    assert losses.shape == (len(examples),)
    assert torch.allclose(losses, expected, atol=1e-5)


def test_answer_token_gradients_match_full_logits(tiny_model_dir, fixture_records):
    import torch

    from spacy_bioselecttune.engine.loading import load_model

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", trainable=True)
    examples = _examples(tokenizer, fixture_records)
    gradients = []
    for loss_of in (
        lambda: answer_token_loss_sums(model, collate(examples, tokenizer.pad_token_id)).token_mean(),
        lambda: torch.cat([_reference_token_losses(model, example) for example in examples]).mean(),
    ):
        model.zero_grad()
        loss_of().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    indexed, reference = gradients
    assert indexed.keys() == reference.keys() and len(indexed) > 0
    for name, gradient in reference.items():
        assert torch.allclose(indexed[name], gradient, atol=1e-6, rtol=1e-4), name


def test_collate_masks(model_and_tokenizer, fixture_records):
    _, tokenizer = model_and_tokenizer
    examples = _examples(tokenizer, fixture_records)
    batch = collate(examples, tokenizer.pad_token_id)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        assert batch["attention_mask"][row].sum().item() == length
        assert batch["answer_mask"][row].sum().item() == example.answer_length
        assert batch["answer_mask"][row, example.answer_start].item()
        assert not batch["answer_mask"][row, example.answer_start - 1].item()
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("prefix_length", [0, 3])
def test_collate_equals_a_row_by_row_construction(model_and_tokenizer, fixture_records, prefix_length):
    import torch

    _, tokenizer = model_and_tokenizer
    examples = _examples(tokenizer, fixture_records)
    batch = collate(examples, tokenizer.pad_token_id, prefix_length)
    width = max(len(example.input_ids) for example in examples) - prefix_length
    for row, example in enumerate(examples):
        ids = example.input_ids[prefix_length:]
        assert batch["input_ids"][row].tolist() == ids + [tokenizer.pad_token_id] * (width - len(ids))
        assert batch["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (width - len(ids))
        first = max(example.answer_start - prefix_length, 1)
        assert batch["answer_mask"][row].tolist() == [first <= t < len(ids) for t in range(width)]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long and batch["answer_mask"].dtype == torch.bool


def test_loss_sums_and_token_mean(model_and_tokenizer, fixture_records):
    import torch

    model, tokenizer = model_and_tokenizer
    examples = _examples(tokenizer, fixture_records)
    with torch.no_grad():
        result = answer_token_loss_sums(model, collate(examples, tokenizer.pad_token_id))
    assert result.counts.tolist() == [e.answer_length for e in examples]
    assert torch.allclose(result.token_mean(), result.sums.sum() / sum(e.answer_length for e in examples))


def test_small_logit_chunks_give_the_same_losses(model_and_tokenizer, fixture_records, monkeypatch):
    import torch

    from spacy_bioselecttune.engine import logprobs

    model, tokenizer = model_and_tokenizer
    batch = collate(_examples(tokenizer, fixture_records), tokenizer.pad_token_id)
    with torch.no_grad():
        whole = answer_token_losses(model, batch)
        monkeypatch.setattr(logprobs, "LOGIT_BUDGET", 3 * model.config.vocab_size)
        chunked = answer_token_losses(model, batch)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_shared_prompt_prefix_stops_before_each_last_prompt_token():
    same_prompt = [EncodedExample([5, 6, 7, 1, 2], 3), EncodedExample([5, 6, 7, 3], 3)]
    assert shared_prompt_prefix(same_prompt) == [5, 6]
    diverging = [EncodedExample([5, 6, 7, 8, 1], 4), EncodedExample([5, 6, 9, 8, 1], 4)]
    assert shared_prompt_prefix(diverging) == [5, 6]
    assert shared_prompt_prefix([EncodedExample([5, 1], 1), EncodedExample([5, 6, 1], 2)]) == []
    assert shared_prompt_prefix([]) == []


def test_prefix_cached_losses_equal_uncached_losses(model_and_tokenizer, fixture_records):
    import torch

    model, tokenizer = model_and_tokenizer
    examples = _examples(tokenizer, fixture_records)
    shared = shared_prompt_prefix(examples)
    assert 0 < len(shared) < min(example.answer_start for example in examples)
    assert all(example.input_ids[: len(shared)] == shared for example in examples)
    with torch.no_grad():
        expected = answer_token_losses(model, collate(examples, tokenizer.pad_token_id))
        for length in (len(shared), 1):
            prefix = prefix_cache(model, shared[:length])
            batch = collate(examples, tokenizer.pad_token_id, prefix_length=length)
            cached = answer_token_losses(model, batch, prefix)
            assert torch.allclose(cached, expected, atol=1e-5)
            assert torch.equal(answer_token_losses(model, batch, prefix), cached)  # the cache is not consumed


def test_collate_rejects_a_prefix_that_reaches_the_answer(model_and_tokenizer, fixture_records):
    _, tokenizer = model_and_tokenizer
    examples = _examples(tokenizer, fixture_records)
    with pytest.raises(ValueError, match="E405"):
        collate(examples, tokenizer.pad_token_id, prefix_length=min(e.answer_start for e in examples))


def test_gradients_flow_through_a_peft_model(tiny_model_dir, fixture_records):
    import torch
    from peft import LoraConfig, get_peft_model

    from spacy_bioselecttune.engine.loading import load_model

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", trainable=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    batch = collate(_examples(tokenizer, fixture_records), tokenizer.pad_token_id)
    loss = answer_token_loss_sums(peft_model, batch).token_mean()
    loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        expected = _reference_losses(peft_model, _examples(tokenizer, fixture_records))
        assert torch.allclose(answer_token_losses(peft_model, batch), expected, atol=1e-5)
