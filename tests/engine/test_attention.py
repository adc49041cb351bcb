from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from spacy_bioselecttune.engine import attention  # noqa: E402
from spacy_bioselecttune.engine.attention import PACKED_DECODE_ATTENTION, packed_decode_attention  # noqa: E402
from spacy_bioselecttune.engine.generate import Generator  # noqa: E402


class _GroupedAttention(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


def _inputs(query_length: int, mask_heads: int = 1):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 6, query_length, 8, generator=generator)
    key, value = (torch.randn(2, 2, 5, 8, generator=generator) for _ in range(2))
    mask = torch.ones(2, mask_heads, query_length, 5, dtype=torch.bool)
    mask[0, :, :, :2] = False  # a left-padded row
    return query, key, value, mask


def test_single_query_matches_repeated_keys_without_copying_them():
    from transformers.integrations.sdpa_attention import repeat_kv

    query, key, value, mask = _inputs(1)
    packed, _ = packed_decode_attention(_GroupedAttention(), query, key, value, mask, scaling=0.5)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, 3), repeat_kv(value, 3), attn_mask=mask, scale=0.5
    ).transpose(1, 2)
    assert packed.shape == (2, 1, 6, 8)
    assert torch.allclose(packed, expected, atol=1e-6)
    assert not torch.allclose(packed[0], expected[1], atol=1e-3)


@pytest.mark.parametrize("query_length, mask_heads", [(4, 1), (1, 6)])
def test_prompts_and_per_head_masks_take_the_sdpa_path(monkeypatch, query_length, mask_heads):
    calls = []
    from transformers.integrations import sdpa_attention

    original = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    query, key, value, mask = _inputs(query_length, mask_heads)
    packed_decode_attention(_GroupedAttention(), query, key, value, mask)
    assert calls == [1]


@pytest.mark.parametrize("decoding", ["dynamic", "static", "continuous"])
def test_generator_decodes_with_packed_attention_and_the_same_tokens(tiny_model_dir, monkeypatch, decoding):
    prompts = ["Text: alpha beta", "Text: gamma", "Text: delta epsilon zeta eta"]
    settings = dict(device="cpu", batch_size=2, max_new_tokens=6, decoding=decoding, draft_tokens=0)  # one query token per step
    plain = Generator(str(tiny_model_dir), **settings)
    plain.model.set_attn_implementation("sdpa")  # back to transformers' own SDPA attention
    expected = plain.generate_token_ids(prompts)

    packed_calls = []
    original = attention.packed_decode_attention

    def spy(module, query, *args, **kwargs):
        packed_calls.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(attention, "packed_decode_attention", spy)
    packed = Generator(str(tiny_model_dir), **settings)
    assert packed.model.config._attn_implementation == PACKED_DECODE_ATTENTION
    assert packed.generate_token_ids(prompts) == expected
    assert 1 in packed_calls

