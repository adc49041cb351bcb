"""Continuous batching: waiting prompts take the places of finished rows, so the batch stays full.

The dynamic loop decodes one batch until its longest answer ends, and its last steps run few
rows; each step costs about the same host time however many rows it runs. Here, once at
least `refill` places are free, the waiting prompts are prefilled after the shared prefix in
one forward pass and their rows joined to the running batch, the shorter cache left-padded to
the other's length. Padding is masked, so each row gets the dynamic loop's greedy tokens.

State between steps: the cache holds every fed token (`mask` marks the real ones, one column
per cache slot), `tokens` the last chosen token of each row, not yet fed, and `positions` the
position of each row's last fed token.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from .static_decode import last_token_logits, prefill_inputs

if TYPE_CHECKING:
    import torch

REFILL_FRACTION = 4  # prompts join the batch once a quarter of its places are free


def supports_joined_rows(cache) -> bool:
    """Whether every layer of a dynamic cache is a plain full-attention layer whose rows can be joined."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass
class _Rows:
    """The running rows: prompt indices, tokens per row so far, cache, mask, next tokens and positions."""

    prompts: List[int]
    counts: List[int]
    cache: object
    mask: "torch.Tensor"
    tokens: "torch.Tensor"
    positions: "torch.Tensor"

    def select(self, keep: List[int]) -> None:
        """Keep only the rows at `keep`."""
        import torch

        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.tokens, self.positions = self.mask[index], self.tokens[index], self.positions[index]
        self.prompts = [self.prompts[i] for i in keep]
        self.counts = [self.counts[i] for i in keep]

    def join(self, other: "_Rows") -> None:
        """Append `other`'s rows, left-padding the shorter cache and mask to the other's length."""
        import torch

        length = max(self.mask.shape[1], other.mask.shape[1])
        for layer, joined in zip(self.cache.layers, other.cache.layers):
            layer.keys = torch.cat([_left_pad(layer.keys, length), _left_pad(joined.keys, length)])
            layer.values = torch.cat([_left_pad(layer.values, length), _left_pad(joined.values, length)])
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.positions = torch.cat([self.positions, other.positions])
        self.prompts += other.prompts
        self.counts += other.counts

    def trim(self) -> None:
        """Drop the leading cache slots no row attends to."""
        first = int(self.mask.any(0).long().argmax())
        if first > 0:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]


def _left_pad(tensor: "torch.Tensor", length: int) -> "torch.Tensor":
    """Zeros before `tensor`'s slot dimension (-2 for cache states of 4 dimensions, else -1) up to `length` slots."""
    import torch

    dim = -2 if tensor.dim() == 4 else -1
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def decode_continuous(
    model,
    prompts: Sequence[Sequence[int]],
    prefix_length: int,
    prefix_cache: Optional[object],
    *,
    pad_id: int,
    batch_size: int,
    max_new_tokens: int,
    cache_argument: str,
    finished: Callable[[int, int], bool],
    times,
) -> None:
    """Greedy decoding of `prompts`, admitted in the order given; `finished(prompt, token)` takes each token.

    Every prompt starts with the `prefix_length` tokens cached in `prefix_cache` (batch 1; none
    when `prefix_length` is 0). `finished` returns True once a prompt's answer is complete;
    a prompt also stops after `max_new_tokens` tokens. `times` (a DecodeTimes) adds up the
    prefill and decode time, the refills (as batches) and the steps.
    """
    import torch

    waiting = deque(range(len(prompts)))
    refill = max(1, batch_size // REFILL_FRACTION)
    running: Optional[_Rows] = None
    while waiting or running is not None:
        free = batch_size - (len(running.prompts) if running else 0)
        started = time.perf_counter()
        if waiting and (running is None or free >= refill):
            admitted = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            rows = _prefill(model, [prompts[i] for i in admitted], admitted, prefix_length, prefix_cache, pad_id, cache_argument)
            times.prefill_seconds += time.perf_counter() - started
            times.batches += 1
            first_fresh = len(running.prompts) if running else 0
            if running is None:
                running = rows
            else:
                running.join(rows)
        else:
            first_fresh = 0
            mask = torch.cat([running.mask, running.mask.new_ones((len(running.prompts), 1))], 1)
            positions = running.positions + 1
            logits = last_token_logits(model, running.tokens[:, None], mask, positions[:, None], cache_argument, running.cache)
            running.mask, running.positions, running.tokens = mask, positions, logits.argmax(dim=-1)
            times.decode_seconds += time.perf_counter() - started
            times.decode_steps += 1
            times.row_steps += len(running.prompts)
        keep = list(range(first_fresh))  # rows whose latest token was taken in an earlier pass
        for slot, token in enumerate(running.tokens[first_fresh:].tolist(), start=first_fresh):
            running.counts[slot] += 1
            if not finished(running.prompts[slot], token) and running.counts[slot] < max_new_tokens:
                keep.append(slot)
        if not keep:
            running = None
        elif len(keep) < len(running.prompts):
            running.select(keep)
            running.trim()


def _prefill(model, prompts, indices, prefix_length, prefix_cache, pad_id, cache_argument) -> _Rows:
    """Run the prompts' suffixes after a copy of the prefix cache; rows holding each prompt's first token."""
    input_ids, mask, positions, cache = prefill_inputs(model, prompts, prefix_length, prefix_cache, pad_id)
    logits = last_token_logits(model, input_ids, mask, positions, cache_argument, cache)
    return _Rows(list(indices), [0] * len(prompts), cache, mask, logits.argmax(dim=-1), positions[:, -1])
