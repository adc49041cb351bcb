"""Greedy decoding with a static key/value cache, so that every decode step has the same shapes.

A batch keeps all its rows until the last one has finished: a row that has closed its JSON
array goes on decoding into slots nobody reads. In exchange each decode step (forward, argmax
and bookkeeping) is one fixed computation over preallocated buffers. On CUDA it is captured
once as a CUDA graph and replayed, which removes the per-kernel launch cost that bounds eager
decoding of a small model on a GPU; on the CPU the same step runs eagerly.

Layout of a batch in the cache: the shared prefix in slots [0, P), the left-padded prompt
suffixes in [P, P + W), then one slot per decode step. A boolean key mask marks which slots
each row may attend to; the positions given to the model skip the padding, as in the
dynamic loop of `generate.py`.

Refilling (`start_refilling`, `admit`, `decode_refilling`) instead gives a finished row a
waiting prompt: the prompt is prefilled eagerly and its suffix's keys and values are written
into that row just before the write slot, which all rows share. When the slots run out, the
slots of the rows in use are moved to the front of the cache in one shift for all rows. The
captured step is the same in both modes; only the buffers it reads change between replays.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, List, Optional, Sequence

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

CACHE_ROUNDING = 64  # cache lengths are rounded up to a multiple of this, so one decoder serves many batches
GRAPH_WARMUP_STEPS = 2  # eager steps on a side stream before capture, as CUDA graph capture requires


def rounded_cache_length(length: int) -> int:
    """`length` rounded up to a multiple of `CACHE_ROUNDING`."""
    return -(-length // CACHE_ROUNDING) * CACHE_ROUNDING


def last_token_logits(model, input_ids, attention_mask, position_ids, cache_argument: str, cache) -> "torch.Tensor":
    """Logits at each row's last position; the inputs' key/value states are appended to `cache`.

    For several input tokens the last position is picked by an index tensor rather than
    `logits_to_keep=1`: the model then slices its hidden states with a copy, and the LM head gets a
    contiguous input. The strided slice made the CPU's LM head about 7 times slower (317 against
    47 ms for 64 rows and SmolLM2's 49,152-token vocabulary on two cores).
    """
    import torch

    width = input_ids.shape[1]
    keep = 1 if width == 1 else torch.tensor([width - 1], device=input_ids.device)
    return _logits(model, input_ids, attention_mask, position_ids, cache_argument, cache, keep)[:, -1]


def all_token_logits(model, input_ids, attention_mask, position_ids, cache_argument: str, cache) -> "torch.Tensor":
    """Logits at every input position (rows, width, vocabulary); the inputs' states are appended to `cache`."""
    return _logits(model, input_ids, attention_mask, position_ids, cache_argument, cache, 0)


def _logits(model, input_ids, attention_mask, position_ids, cache_argument: str, cache, keep) -> "torch.Tensor":
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=keep,
        **{cache_argument: cache},
    ).logits


def suffix_inputs(prompts: Sequence[Sequence[int]], prefix_length: int, pad_id: int, device):
    """Inputs to run the prompts' suffixes after a cached prefix of `prefix_length` tokens:
    left-padded suffix ids, the mask over prefix and suffix, and the suffix positions."""
    import torch

    size = len(prompts)
    suffixes = [list(ids[prefix_length:]) for ids in prompts]
    width = max(len(ids) for ids in suffixes)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in suffixes], device=device)
    suffix_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in suffixes], device=device)
    mask = torch.cat([torch.ones((size, prefix_length), dtype=torch.long, device=device), suffix_mask], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_length:]
    return input_ids, mask, positions


def prefill_inputs(model, prompts: Sequence[Sequence[int]], prefix_length: int, prefix_cache: Optional[object], pad_id: int):
    """`suffix_inputs` and a cache holding the prefix once per prompt (or empty)."""
    from transformers import DynamicCache

    input_ids, mask, positions = suffix_inputs(prompts, prefix_length, pad_id, model.device)
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(prompts))
    else:
        cache = DynamicCache(config=model.config)
    return input_ids, mask, positions, cache


def key_value_geometry(model: "PreTrainedModel"):
    """Key/value heads, head size and dtype of the model's cached states."""
    config = model.config.get_text_config(decoder=True)
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return heads, head_dim, next(model.parameters()).dtype


def supports_static_cache(model: "PreTrainedModel") -> bool:
    """Whether every layer of the model's static cache is a plain full-attention layer.

    Sliding-window layers (Gemma 3) keep host-side counters, which neither a captured
    graph nor this decoder's slot layout can follow.
    """
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cache = StaticCache(config=model.config, max_cache_len=CACHE_ROUNDING)
    return all(type(layer) is StaticLayer for layer in cache.layers)


class StaticDecoder:
    """Preallocated cache and buffers for greedy decoding of `batch_size` rows.

    cache_length: slots per row (prefix + longest suffix + decode steps must fit).
    max_steps: decode steps per batch after the prefill's token.
    cache_argument: the model's keyword for the cache ("cache" or "past_key_values").
    use_graph: capture the decode step as a CUDA graph (CUDA only).
    compiled: run the decode step through torch.compile (compiled on the first step, before any capture).
    """

    def __init__(
        self,
        model: "PreTrainedModel",
        batch_size: int,
        cache_length: int,
        max_steps: int,
        cache_argument: str,
        use_graph: bool,
        compiled: bool = False,
    ) -> None:
        import torch
        from transformers import StaticCache

        self.model = model
        self.batch_size = batch_size
        self.cache_length = cache_length
        self.max_steps = max_steps
        self.cache_argument = cache_argument
        self.prefix_tokens: Optional[tuple] = None
        device = model.device
        heads, head_dim, dtype = key_value_geometry(model)
        self.cache = StaticCache(config=model.config, max_cache_len=cache_length)
        empty = torch.zeros((batch_size, heads, 1, head_dim), dtype=dtype, device=device)
        for layer in self.cache.layers:
            layer.lazy_initialization(empty, empty)
        self.tokens = torch.zeros((batch_size, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((batch_size, 1), dtype=torch.long, device=device)
        self.slot = torch.zeros((1,), dtype=torch.long, device=device)
        self.step_index = torch.zeros((1,), dtype=torch.long, device=device)
        self.key_valid = torch.zeros((batch_size, cache_length), dtype=torch.bool, device=device)
        self.generated = torch.zeros((batch_size, max(1, max_steps)), dtype=torch.long, device=device)
        self._steps_done = 0
        self._write_slot = 0  # host copy of `slot` for the refilling loop
        self._prefix_length = 0
        self._row_start: List[Optional[int]] = [None] * batch_size  # first slot of each refilled row's own tokens
        self._run_step = torch.compile(self._step, dynamic=False) if compiled else self._step
        self.graph = self._capture() if use_graph else None

    def set_prefix(self, prefix_tokens: Sequence[int], prefix_cache) -> None:
        """Copy the shared prefix's keys and values (batch 1) into slots [0, P) of every row."""
        for static_layer, prefix_layer in zip(self.cache.layers, prefix_cache.layers):
            length = prefix_layer.keys.shape[-2]
            static_layer.keys[:, :, :length].copy_(prefix_layer.keys.to(static_layer.keys.dtype))
            static_layer.values[:, :, :length].copy_(prefix_layer.values.to(static_layer.values.dtype))
        self.prefix_tokens = tuple(prefix_tokens)

    def prefill(self, suffixes: Sequence[Sequence[int]], prefix_length: int, pad_id: int) -> List[int]:
        """Run the left-padded prompt suffixes (exactly `batch_size` rows) after the prefix; return each row's first token."""
        import torch

        device = self.tokens.device
        size, width = len(suffixes), max(len(ids) for ids in suffixes)
        if size != self.batch_size or prefix_length + width + self.max_steps > self.cache_length:
            raise ValueError(f"a batch of {size} rows x {prefix_length + width} slots does not fit this decoder")
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + list(ids) for ids in suffixes], device=device)
        suffix_mask = torch.tensor([[False] * (width - len(ids)) + [True] * len(ids) for ids in suffixes], device=device)
        seen = torch.cat([torch.ones((size, prefix_length), dtype=torch.long, device=device), suffix_mask.long()], 1)
        positions = (seen.cumsum(-1) - 1).clamp(min=0)[:, prefix_length:]
        self.key_valid.zero_()
        self.key_valid[:, :prefix_length] = True
        self.key_valid[:, prefix_length : prefix_length + width] = suffix_mask
        slots = torch.arange(self.cache_length, device=device)
        query_slots = torch.arange(prefix_length, prefix_length + width, device=device)[:, None]
        # causal over the valid slots; a padding query also sees itself, so that no row is fully masked
        mask = (self.key_valid[:, None, None, :] & (slots <= query_slots)) | (slots == query_slots)
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(prefix_length)
        logits = last_token_logits(self.model, input_ids, mask, positions, self.cache_argument, self.cache)
        first = logits.argmax(dim=-1)
        self.tokens.copy_(first[:, None])
        self.positions.copy_(positions[:, -1:] + 1)
        self.slot.fill_(prefix_length + width)
        self.step_index.zero_()
        self._steps_done = 0
        return first.tolist()

    def decode(self, steps: int) -> List[List[int]]:
        """Run up to `steps` more decode steps (never past `max_steps`); return the tokens they produced, per row."""
        start = self._steps_done
        steps = min(steps, self.max_steps - start)
        self._replay(steps)
        self._steps_done = start + steps
        return self.generated[:, start : start + steps].tolist()

    # --- refilling: rows that finish take new prompts (continuous batching in the static cache) ---

    def start_refilling(self, prefix_length: int) -> None:
        """Free every row; the shared prefix (see `set_prefix`) fills slots [0, prefix_length)."""
        self._prefix_length = prefix_length
        self._row_start = [None] * self.batch_size
        self.key_valid.zero_()
        self.key_valid[:, :prefix_length] = True
        self._set_write_slot(prefix_length)

    def admit(self, rows: Sequence[int], prompts: Sequence[Sequence[int]], prefix_cache, pad_id: int, headroom: int) -> List[int]:
        """Prefill `prompts` (each starting with the prefix) into the free `rows`; return their first tokens.

        The prompts run eagerly after a copy of the prefix cache; their suffixes' keys and values
        go to the slots just before the write slot, which first moves so that the widest suffix
        fits behind it and `headroom` decode steps after it.
        """
        import torch

        prefix_length = self._prefix_length
        width = max(len(ids) for ids in prompts) - prefix_length
        slot = max(self._write_slot, prefix_length + width)
        if slot + headroom > self.cache_length:
            slot = prefix_length + max(self._live_length(), width)
        self._relocate(slot)
        input_ids, mask, positions, cache = prefill_inputs(self.model, prompts, prefix_length, prefix_cache, pad_id)
        logits = last_token_logits(self.model, input_ids, mask, positions, self.cache_argument, cache)
        index = torch.tensor(list(rows), device=self.tokens.device)
        start = slot - width
        for static_layer, layer in zip(self.cache.layers, cache.layers):
            static_layer.keys[index, :, start:slot] = layer.keys[:, :, -width:].to(static_layer.keys.dtype)
            static_layer.values[index, :, start:slot] = layer.values[:, :, -width:].to(static_layer.values.dtype)
        self.key_valid[index] = False
        self.key_valid[index, :prefix_length] = True
        self.key_valid[index, start:slot] = mask[:, -width:].bool()
        first = logits.argmax(dim=-1)
        self.tokens[index] = first[:, None]
        self.positions[index] = positions[:, -1:] + 1
        for row in rows:
            self._row_start[row] = start
        return first.tolist()

    def release(self, row: int) -> None:
        """Mark `row` free: its tokens no longer need keeping."""
        self._row_start[row] = None

    def decode_refilling(self, steps: int) -> List[List[int]]:
        """Run `steps` decode steps (at most `max_steps`), first moving the live rows to the front of
        the cache if the steps would not fit; return the tokens they produced, per row."""
        steps = min(steps, self.generated.shape[1])
        if self._write_slot + steps > self.cache_length:
            self._relocate(self._prefix_length + self._live_length())
        self.step_index.zero_()
        self._replay(steps)
        self._write_slot += steps
        return self.generated[:, :steps].tolist()

    def _live_length(self) -> int:
        """Slots from the earliest start of a row in use to the write slot (0 when no row is in use)."""
        starts = [start for start in self._row_start if start is not None]
        return self._write_slot - min(starts) if starts else 0

    def _relocate(self, slot: int) -> None:
        """Move the slots of the rows in use so that they end at `slot` (one shift for all rows) and write there next."""
        old = self._write_slot
        shift = slot - old
        if shift == 0:
            return
        keep = self._live_length()
        if keep:
            for layer in self.cache.layers:
                layer.keys[:, :, slot - keep : slot] = layer.keys[:, :, old - keep : old].clone()
                layer.values[:, :, slot - keep : slot] = layer.values[:, :, old - keep : old].clone()
        valid = self.key_valid[:, old - keep : old].clone()
        self.key_valid[:, self._prefix_length :] = False
        self.key_valid[:, slot - keep : slot] = valid
        self._row_start = [None if start is None else start + shift for start in self._row_start]
        self._set_write_slot(slot)

    def _set_write_slot(self, slot: int) -> None:
        self._write_slot = slot
        self.slot.fill_(slot)
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(slot)

    def _replay(self, steps: int) -> None:
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._run_step()

    def _step(self) -> None:
        """One decode step on the buffers: attend, pick the next token, advance."""
        self.key_valid.index_fill_(1, self.slot, True)
        mask = self.key_valid[:, None, None, :]
        logits = last_token_logits(self.model, self.tokens, mask, self.positions, self.cache_argument, self.cache)
        next_tokens = logits.argmax(dim=-1, keepdim=True)
        self.tokens.copy_(next_tokens)
        self.generated.index_copy_(1, self.step_index, next_tokens)
        self.positions.add_(1)
        self.slot.add_(1)
        self.step_index.add_(1)

    def _capture(self) -> "torch.cuda.CUDAGraph":
        """Warm the step up on a side stream, then capture it; the buffers are reset by the next prefill."""
        import torch

        for layer in self.cache.layers:
            layer.cumulative_length.zero_()
        stream = torch.cuda.Stream(device=self.tokens.device)
        stream.wait_stream(torch.cuda.current_stream(self.tokens.device))
        with torch.cuda.stream(stream):
            for _ in range(GRAPH_WARMUP_STEPS):
                self._run_step()
        torch.cuda.current_stream(self.tokens.device).wait_stream(stream)
        self.slot.zero_()
        self.step_index.zero_()
        for layer in self.cache.layers:
            layer.cumulative_length.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._run_step()
        return graph
