"""Decode-step attention without copying the key/value cache for grouped-query attention.

SmolLM2 and Gemma 3 have fewer key/value heads than query heads. Transformers' SDPA attention
repeats the cached keys and values once per query head of a group before calling SDPA when a
mask is given, i.e. at every decode step of a left-padded batch. Profiled on one NVIDIA H200
(scripts/profile_decoding.py, batch 64), those copies and the one-query-per-tile attention they
feed were about half the GPU time of a CUDA-graph decode step. For a single query token the
group's query heads are instead packed as the query rows of their key/value head, so SDPA reads
the cache as it is. Prompts (more than one query token) take transformers' own SDPA path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

PACKED_DECODE_ATTENTION = "bioselecttune_packed_sdpa"


def packed_decode_attention(
    module: "torch.nn.Module",
    query: "torch.Tensor",
    key: "torch.Tensor",
    value: "torch.Tensor",
    attention_mask: Optional["torch.Tensor"],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs,
) -> Tuple["torch.Tensor", None]:
    """SDPA attention; a single query token attends per key/value head with its group's query heads as rows."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, query_length, dim = query.shape
    mask_per_head = attention_mask is not None and attention_mask.shape[1] != 1
    if query_length != 1 or groups == 1 or mask_per_head or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # query head h belongs to key/value head h // groups, as in transformers' repeat_kv
    packed = query.reshape(batch, heads // groups, groups, dim)
    output = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def use_packed_decode_attention(model: "PreTrainedModel") -> "PreTrainedModel":
    """Switch a model that uses SDPA attention to `packed_decode_attention` (masks are built as for SDPA)."""
    import warnings

    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if model.config._attn_implementation != "sdpa":
        return model
    AttentionInterface.register(PACKED_DECODE_ATTENTION, packed_decode_attention)
    AttentionMaskInterface.register(PACKED_DECODE_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # a deprecated name transformers itself calls
        model.set_attn_implementation(PACKED_DECODE_ATTENTION)
    return model
