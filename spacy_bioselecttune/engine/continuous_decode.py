"""Continuous batching: waiting prompts take the places of finished rows, so the batch stays full.

The dynamic loop decodes one batch until its longest answer ends, and its last steps run few
rows. Here, once at least `refill` places are free, the waiting prompts are prefilled and
join the running rows; each row gets the dynamic loop's greedy tokens.

The running rows live in preallocated key/value slots, one buffer per layer of
(batch_size rows, heads, slots, head size), so that nothing is copied at every step:

- rows [0, n) are in use; all of them write their next token's states into the same slot,
  `length`, in place (a growing cache would copy itself at every step);
- each row's tokens are left-padded to end at `length`, and `mask` marks its real slots;
- a finished row's place is taken by the last row in use, a copy of that one row;
- admitted prompts are prefilled straight into the next free rows, after a copy of the
  shared prefix, in groups of similar suffix width (`width_groups`), so that little of the
  prefill is padding;
- every step attends to all slots before the write slot, padding included: when the slots run
  out, or when a quarter of them could go, each row's real slots move together to end at a
  new, lower write slot (`_compact`), and the buffers grow if they must;
- with drafts (`drafting.PromptLookup`), a step feeds each row its last token and the tokens its
  prompt suggests come next, in consecutive slots; the slots of draft tokens the model rejects
  become padding. Drafts are fed only while they cost at most one more pass (`PASS_TOKENS`): on a
  CPU a step of many rows is bound by compute, so there drafts run in the batch's last steps.

On the first 200 NCBI-disease test sentences (2 CPU cores, 64 rows) this loop ran 1.3 to 1.5
times its earlier form, which concatenated the cache at every step and every join, with the
same tokens.
"""
from __future__ import annotations

import functools
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from .drafting import PromptLookup
from .static_decode import (
    CACHE_ROUNDING, all_token_logits, key_value_geometry, last_token_logits, rounded_cache_length, suffix_inputs,
)

if TYPE_CHECKING:
    import torch

REFILL_FRACTION = 4  # prompts join the batch once a quarter of its places are free
SPARE_SLOTS = CACHE_ROUNDING // 2  # free slots after the write slot once the slots in use have moved
PADDING_FRACTION = 4  # the rows are compacted once that drops a quarter of the slots they attend to
# What one more forward pass costs, in tokens of a pass. On two CPU cores with SmolLM2-135M one row
# of 32 suffix tokens took 162 ms and each further token about 2 ms (weights are read once per
# pass). On a GPU tokens cost little against a pass's kernel launches (not measured there). It
# sets how far admitted prompts are padded (`width_groups`) and how many draft tokens a decode
# step feeds per row (at most this many in all).
PASS_TOKENS = {"cpu": 48}
DEFAULT_PASS_TOKENS = 1024


def supports_joined_rows(cache) -> bool:
    """Whether every layer of a dynamic cache is a plain full-attention layer, as `SlotBatch`'s slots assume."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def width_groups(widths: Sequence[int], pass_tokens: int) -> List[int]:
    """Split `widths` (sorted widest first) into runs, each padded to its first width; return the
    start of each run. The split minimises padded tokens plus `pass_tokens` per run."""
    best = [0] + [None] * len(widths)  # best[j]: the cost of widths[:j]
    start_of = [0] * (len(widths) + 1)
    for end in range(1, len(widths) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * widths[start] + pass_tokens
            if best[end] is None or cost < best[end]:
                best[end], start_of[end] = cost, start
    starts, end = [], len(widths)
    while end > 0:
        end = start_of[end]
        starts.append(end)
    return starts[::-1]


@functools.lru_cache(maxsize=None)
def _slot_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """A cache layer over preallocated slots: `update` writes new states in place after the `length` slots in use."""

        def __init__(self, key_slots: "torch.Tensor", value_slots: "torch.Tensor", length: int) -> None:
            super().__init__()
            self.key_slots, self.value_slots = key_slots, value_slots
            self.device = key_slots.device
            self.is_initialized = True
            self._use(length)

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            self.key_slots[:, :, self.length : end] = key_states
            self.value_slots[:, :, self.length : end] = value_states
            self._use(end)
            return self.keys, self.values

        def _use(self, length: int) -> None:
            self.length = length
            self.keys, self.values = self.key_slots[:, :, :length], self.value_slots[:, :, :length]

    return SlotLayer


class SlotBatch:
    """The running rows of continuous batching, in preallocated key/value slots (see the module docstring)."""

    def __init__(self, model, rows: int, cache_argument: str, drafting: bool = False) -> None:
        import torch

        self.model = model
        self.cache_argument = cache_argument
        self.slot_layer = _slot_layer_class()
        device = model.device
        heads, head_dim, dtype = key_value_geometry(model)
        layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self.keys = [torch.empty((rows, heads, 0, head_dim), dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty_like(keys) for keys in self.keys]
        self.mask = torch.zeros((rows, 0), dtype=torch.long, device=device)  # slots are allocated by the first admission
        self.tokens = torch.zeros((rows,), dtype=torch.long, device=device)  # each row's last chosen token, not yet fed
        self.positions = torch.zeros((rows,), dtype=torch.long, device=device)  # each row's last fed position
        self.prompts: List[int] = []  # the prompt each row in use decodes
        self.counts: List[int] = []  # tokens chosen so far per row
        self.length = 0  # slots in use; the next token's states go to this slot
        self.lookup = PromptLookup(rows, device) if drafting else None  # each row's context, for drafts
        self.drafted = self.accepted = 0  # draft tokens fed and kept, over all steps (tensors once drafts ran)

    @property
    def size(self) -> int:
        """Rows in use."""
        return len(self.prompts)

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    def step(self, draft_width: int = 0) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """Feed every row its last token, followed by up to `draft_width` draft tokens (with
        `drafting`), and choose the next tokens: the model's token after each draft token it agrees
        with and after the last one kept. Return the chosen tokens (rows, width) and how many of
        each row's count (at least one); a row's slots for draft tokens it rejected become padding."""
        import torch

        rows = self.size
        width = 1
        if draft_width and self.lookup is not None:
            drafts, drafted = self.lookup.drafts(rows, min(draft_width, SPARE_SLOTS - 1))
            width += int(drafted.max())
        if self.length + width > self.capacity:
            self._compact()
        offsets = torch.arange(width, device=self.mask.device)
        self.mask[:rows, self.length : self.length + width] = 1
        context = (self.mask[:rows, : self.length + width], self.positions[:rows, None] + 1 + offsets, self.cache_argument,
                   self._cache(slice(0, rows), 0, self.length))
        if width == 1:
            chosen = last_token_logits(self.model, self.tokens[:rows, None], *context).argmax(dim=-1)[:, None]
            counts = torch.ones_like(self.positions[:rows])
        else:
            fed = torch.cat([self.tokens[:rows, None], drafts[:, : width - 1]], 1)
            chosen = all_token_logits(self.model, fed, *context).argmax(dim=-1)
            agreed = (fed[:, 1:] == chosen[:, :-1]) & (offsets[:-1] < drafted[:, None])
            counts = agreed.long().cumprod(1).sum(1) + 1
            self.mask[:rows, self.length : self.length + width] = (offsets < counts[:, None]).long()
            self.drafted = self.drafted + drafted.sum()  # kept on the device: no wait for it
            self.accepted = self.accepted + counts.sum() - rows
        self.tokens[:rows] = chosen.gather(1, (counts - 1)[:, None])[:, 0]
        self.positions[:rows] += counts
        self.length += width
        if self.lookup is not None:
            self.lookup.append(chosen, counts)
        if width > 1:
            self._compact_if_padded()
        return chosen, counts

    def admit(self, prompts: Sequence[Sequence[int]], indices: Sequence[int], prefix_length: int, prefix_cache,
              pad_id: int, pass_tokens: int, contexts: Optional[Sequence[Sequence[int]]] = None) -> None:
        """Prefill `prompts` (each starting with the `prefix_length` tokens cached in `prefix_cache`)
        into the next free rows, choosing each one's first token; `indices` name the prompts.
        With `drafting`, `contexts` are the tokens each prompt's drafts are looked up in."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        widths = [len(prompts[i]) - prefix_length for i in order]
        needed = prefix_length + widths[0]
        if self.size == 0:
            self.length = 0  # nothing to keep: the rows start afresh at the front
        if needed > self.length:
            self._compact(needed)
        starts = width_groups(widths, pass_tokens)
        prefix_layers = prefix_cache.layers if prefix_cache is not None else [None] * len(self.keys)
        for start, end in zip(starts, starts[1:] + [len(order)]):
            rows = slice(self.size + start, self.size + end)
            first = self.length - prefix_length - widths[start]
            for keys, values, prefix in zip(self.keys, self.values, prefix_layers):
                # the padding is masked, but never-written memory could hold NaNs
                keys[rows, :, :first] = values[rows, :, :first] = 0
                if prefix is not None:
                    keys[rows, :, first : first + prefix_length] = prefix.keys
                    values[rows, :, first : first + prefix_length] = prefix.values
            group = [prompts[i] for i in order[start:end]]
            input_ids, mask, positions = suffix_inputs(group, prefix_length, pad_id, self.mask.device)
            logits = last_token_logits(
                self.model, input_ids, mask, positions, self.cache_argument, self._cache(rows, first, prefix_length)
            )
            self.mask[rows] = 0
            self.mask[rows, first : self.length] = mask
            self.tokens[rows] = logits.argmax(dim=-1)
            self.positions[rows] = positions[:, -1]
            if self.lookup is not None:
                firsts = self.tokens[rows].tolist()
                self.lookup.start(rows, [list(contexts[i]) + [token] for i, token in zip(order[start:end], firsts)])
        self.prompts += [indices[i] for i in order]
        self.counts += [0] * len(order)
        self._compact_if_padded()

    def remove(self, finished: Sequence[int]) -> None:
        """Free the rows at `finished` (ascending): the last rows in use move into their places."""
        import torch

        if not finished:
            return
        kept = self.size - len(finished)
        done = set(finished)
        holes = [row for row in finished if row < kept]
        movers = [row for row in range(kept, self.size) if row not in done]
        if holes:
            target = torch.tensor(holes, device=self.mask.device)
            source = torch.tensor(movers, device=self.mask.device)
            for tensor in self.keys + self.values:
                tensor[target, :, : self.length] = tensor[source, :, : self.length]
            for tensor in (self.mask, self.tokens, self.positions):
                tensor[target] = tensor[source]
            if self.lookup is not None:
                self.lookup.move(target, source)
            for hole, mover in zip(holes, movers):
                self.prompts[hole], self.counts[hole] = self.prompts[mover], self.counts[mover]
        del self.prompts[kept:], self.counts[kept:]
        self._compact_if_padded()

    def _compact_if_padded(self) -> None:
        """Compact the rows once that would drop `1 / PADDING_FRACTION` of the slots they attend to."""
        if self.size:
            longest = int(self.mask[: self.size, : self.length].sum(1).max())
            if (self.length - longest) * PADDING_FRACTION >= self.length:
                self._compact()

    def _compact(self, length: int = 0) -> None:
        """Move each row's real slots, in order, to end at slot `length` (at least the most real
        slots of any row), dropping the padding before and between them; at least `SPARE_SLOTS`
        free slots follow, the buffers growing if they must. A decode step attends to every slot
        up to the write slot, padding included, so padding costs compute until it is dropped."""
        import torch

        rows, old = self.size, self.length
        real = self.mask[:rows, :old].bool()
        counts = real.sum(1)
        length = max(length, int(counts.max()) if rows else 0)
        capacity = max(self.capacity, rounded_cache_length(length + SPARE_SLOTS))
        if rows:
            slots = torch.arange(old, device=real.device)
            real_slots = torch.where(real, slots, old).sort(dim=1).values  # each row's real slots first, in order
            rank = torch.arange(length, device=real.device) - (length - counts[:, None])  # which real slot goes where
            kept = rank >= 0
            source = real_slots.gather(1, rank.clamp(0, old - 1)).where(kept, 0)
        buffers = []
        for tensor in self.keys + self.values:
            target = tensor if capacity == self.capacity else tensor.new_empty(tensor.shape[:2] + (capacity,) + tensor.shape[3:])
            if rows:
                index = source[:, None, :, None].expand(rows, tensor.shape[1], length, tensor.shape[3])
                target[:rows, :, :length] = tensor[:rows, :, :old].gather(2, index)
            buffers.append(target)
        self.keys, self.values = buffers[: len(self.keys)], buffers[len(self.keys) :]
        if capacity != self.capacity:
            self.mask = self.mask.new_zeros((self.mask.shape[0], capacity))
        self.mask[:rows] = 0
        if rows:
            self.mask[:rows, :length] = kept.long()
        self.length = length

    def _cache(self, rows: slice, first: int, length: int):
        """A cache over `rows` of the buffers, from slot `first`, holding `length` slots."""
        from transformers.cache_utils import Cache

        return Cache(layers=[
            self.slot_layer(keys[rows, :, first:], values[rows, :, first:], length)
            for keys, values in zip(self.keys, self.values)
        ])


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
    contexts: Optional[Sequence[Sequence[int]]] = None,
    draft_tokens: int = 0,
) -> None:
    """Greedy decoding of `prompts`, admitted in the order given; `finished(prompt, token)` takes each token.

    Every prompt starts with the `prefix_length` tokens cached in `prefix_cache` (batch 1; none
    when `prefix_length` is 0). `finished` returns True once a prompt's answer is complete;
    a prompt also stops after `max_new_tokens` tokens. With `contexts` (each prompt's tokens to
    look drafts up in, `drafting.PromptLookup`) a decode step feeds each row up to `draft_tokens`
    draft tokens, as many as cost at most one more pass (`PASS_TOKENS`) over the rows running.
    `times` (a DecodeTimes) adds up the prefill and decode time, the refills (as batches), the
    steps and the draft tokens fed and kept.
    """
    waiting = deque(range(len(prompts)))
    refill = max(1, batch_size // REFILL_FRACTION)
    pass_tokens = PASS_TOKENS.get(model.device.type, DEFAULT_PASS_TOKENS)
    drafting = contexts is not None and draft_tokens > 0
    batch = SlotBatch(model, batch_size, cache_argument, drafting=drafting)
    while waiting or batch.size:
        started = time.perf_counter()
        first_fresh = 0
        if waiting and (batch.size == 0 or batch_size - batch.size >= refill):
            admitted = [waiting.popleft() for _ in range(min(batch_size - batch.size, len(waiting)))]
            first_fresh = batch.size  # the rows before took their latest token in an earlier pass
            batch.admit([prompts[i] for i in admitted], admitted, prefix_length, prefix_cache, pad_id, pass_tokens,
                        [contexts[i] for i in admitted] if drafting else None)
            chosen = batch.tokens[first_fresh : batch.size, None].tolist()
            times.prefill_seconds += time.perf_counter() - started
            times.batches += 1
        else:
            tokens, counts = batch.step(min(draft_tokens, pass_tokens // batch.size) if drafting else 0)
            chosen = [row[:count] for row, count in zip(tokens.tolist(), counts.tolist())]
            times.decode_seconds += time.perf_counter() - started
            times.decode_steps += 1
            times.row_steps += batch.size
        done = []
        for row, tokens in enumerate(chosen, start=first_fresh):
            for token in tokens:
                batch.counts[row] += 1
                if finished(batch.prompts[row], token) or batch.counts[row] >= max_new_tokens:
                    done.append(row)
                    break
        batch.remove(done)
    times.drafted_tokens += int(batch.drafted)
    times.accepted_tokens += int(batch.accepted)
