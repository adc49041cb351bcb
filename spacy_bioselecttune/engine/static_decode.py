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
"""
from __future__ import annotations

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
    """Logits at each row's last position; the inputs' key/value states are appended to `cache`."""
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument: cache},
    ).logits[:, -1]


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
        config = model.config.get_text_config(decoder=True)
        heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dtype = next(model.parameters()).dtype
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
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._run_step()
        self._steps_done = start + steps
        return self.generated[:, start : start + steps].tolist()

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
