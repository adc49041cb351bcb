"""Batched greedy decoding of prompts into raw JSON answers.

Prompts are sorted by length and decoded in left-padded batches. The key/value cache of the
token prefix all prompts share (the instruction) is computed once and reused by every batch.
Each row stops as soon as its JSON array closes, it writes EOS or its last items only repeat
earlier ones (`ArrayCloseTracker`). Three decoding loops give
the same answers: the dynamic loop drops finished rows from the batch; the continuous loop
(`continuous_decode.py`) fills their places with waiting prompts, and feeds rows draft tokens
looked up in their prompts for the model to check (`drafting.py`); the static loop
(`static_decode.py`) keeps fixed shapes so that on CUDA each decode step is one replayed CUDA
graph, optionally of a torch.compile'd step; its refilling form gives finished rows waiting
prompts inside the static cache. On one NVIDIA H200 (2,048 BC2GM sentences, batch 512) the static
loop ran 516 sentences/s, compiled 615, continuous 495 (its earlier form, which grew its cache by
concatenation) and dynamic 248; on one H100 the refilling
static loop ran 1.4 times the static loop. On a CPU a decode step costs much the same however
few rows it runs, but every row costs compute: continuous batching, which keeps the rows full
and drops finished ones, is the fastest there. "auto", the default, takes the refilling static
loop on CUDA and continuous batching elsewhere, or the dynamic loop where the model's cache
allows neither.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ..errors import Errors, Warnings, warn
from . import attention
from .continuous_decode import REFILL_FRACTION, decode_continuous, supports_joined_rows
from .answer_format import EMPTY_ANSWER, LOOP_ITEMS, draft_template, prompt_labels
from .empty_answer_gate import check_threshold, empty_answer_probabilities, list_opening, opened_prompts
from .encoding import encode_prompts
from .lm_head import use_transposed_head
from .loading import DEFAULT_BASE_MODEL, attention_kernels, load_model
from .logprobs import cache_keyword
from .parser import item_key
from .static_decode import StaticDecoder, last_token_logits, prefill_inputs, rounded_cache_length, supports_static_cache

DECODINGS = ("auto", "dynamic", "static", "compiled", "continuous", "static-continuous", "compiled-continuous")
STATIC_DECODINGS = ("static", "compiled", "static-continuous", "compiled-continuous")
COMPILED_DECODINGS = ("compiled", "compiled-continuous")  # the static step runs through torch.compile
REFILLING_DECODINGS = ("static-continuous", "compiled-continuous")  # finished static rows take waiting prompts
DRAFT_TOKENS = 8  # draft tokens a continuous decode step may feed per row (see Generator)
GRAPH_SYNC_STEPS = 8  # replayed decode steps between looks at the tokens (finished rows may idle this long)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class ArrayCloseTracker:
    """Follows generated text and reports when the answer is over: its outermost JSON array has
    closed, or its last `loop_items` items each repeated an earlier item (a loop that would run
    to max_new_tokens; the parser keeps each item once, so only later new items could be lost)."""

    depth: int = 0
    opened: bool = False
    in_string: bool = False
    escaped: bool = False
    loop_items: int = LOOP_ITEMS  # repeated items in a row that end the answer
    braces: int = 0
    item: Optional[List[str]] = None  # the characters of the top-level item being written
    seen: Set[Tuple[str, str]] = field(default_factory=set)
    repeats: int = 0  # how many items in a row repeated an earlier one

    def feed(self, text: str) -> bool:
        """Consume more text; return True once the answer is over."""
        for char in text:
            if self.item is not None:
                self.item.append(char)
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"' and self.opened:
                self.in_string = True
            elif char == "[":
                self.depth += 1
                self.opened = True
            elif char == "]" and self.depth > 0:
                self.depth -= 1
                if self.depth == 0:
                    return True
            elif char == "{" and self.opened:
                if self.braces == 0 and self.depth == 1:
                    self.item = [char]
                self.braces += 1
            elif char == "}" and self.braces > 0:
                self.braces -= 1
                if self.braces == 0 and self.item is not None and self._loops("".join(self.item)):
                    return True
        return False

    @property
    def looped(self) -> bool:
        """Whether the answer ended as a loop."""
        return self.repeats >= self.loop_items

    def _loops(self, item: str) -> bool:
        """Count a finished top-level item; True once `loop_items` in a row repeated earlier ones."""
        self.item = None
        key = item_key(item)
        self.repeats = self.repeats + 1 if key is not None and key in self.seen else 0
        if key is not None:
            self.seen.add(key)
        return self.looped


@dataclass
class DecodeTimes:
    """Where the time of a generator's calls went, summed over calls.

    Reading each step's tokens waits for the device, so the phases are timed as the device
    finishes them. `row_steps` counts rows x decode steps: the static loop keeps finished rows.
    `looping_answers` counts answers stopped because their last items only repeated earlier ones.
    `drafted_tokens` and `accepted_tokens` count the draft tokens fed to decode steps and those kept.
    `gate_seconds` is the time spent scoring answers `[]` against the empty-answer threshold, and
    `reopened_answers` counts those generated again with the list opened.
    """

    tokenize_seconds: float = 0.0
    prefix_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    batches: int = 0
    decode_steps: int = 0
    row_steps: int = 0
    looping_answers: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    gate_seconds: float = 0.0
    reopened_answers: int = 0

    @property
    def ms_per_decode_step(self) -> float:
        return 1000 * self.decode_seconds / self.decode_steps if self.decode_steps else 0.0

    def to_dict(self) -> Dict[str, float]:
        return {**asdict(self), "ms_per_decode_step": self.ms_per_decode_step}

    @classmethod
    def summed(cls, times: Sequence["DecodeTimes"]) -> "DecodeTimes":
        """The totals of several generators' times."""
        return cls(**{key: sum(getattr(t, key) for t in times) for key in asdict(cls())})


@dataclass
class _PrefixCache:
    """Key/value states of a token prefix shared by a run of prompts (batch size 1)."""

    token_ids: Tuple[int, ...]
    past_key_values: object = field(repr=False)


class Generator:
    """Greedy JSON-answer generation with a base model and an optional LoRA adapter.

    base_model: registered name, local checkpoint directory, .gguf file or hub id.
    adapter: LoRA adapter directory, merged into the base weights unless `merge_adapter` is False.
    device: "auto", "cpu", "cuda" or "cuda:N".
    use_prefix_cache: reuse the cached states of the prompts' shared prefix across batches.
    dtype: weights' dtype, "auto" (bf16 on CUDA, fp32 on CPU), "float32" or "bfloat16".
    prepare: a function applied once to the loaded model, returning the model to use (e.g. `int8_linear_layers`).
    decoding: "auto" (static-continuous on CUDA, continuous elsewhere, where the model allows
        them, else dynamic: of the loops that need no compiling, the fastest on one NVIDIA H100
        and on two CPU cores), "dynamic" (finished rows leave the batch), "static" (fixed
        shapes; a CUDA graph per decode step on CUDA),
        "compiled" (the static loop with its decode step compiled by torch.compile, which fuses
        its small kernels), "continuous" (waiting prompts take finished rows' places), or
        "static-continuous" and "compiled-continuous" (the static loops with finished rows
        taking waiting prompts, inside the static cache); all but "dynamic" for models without
        sliding-window layers only.
    draft_tokens: with continuous batching, draft tokens (looked up in the prompt, `drafting.py`)
        a decode step may feed each row for the model to check, or 0 for one token per step.
    empty_answer_threshold: None for plain greedy answers; else an answer `[]` stands only where
        the model closes the list right after opening it with at least this probability, and
        the others are generated again with the list opened (`empty_answer_gate.py`).
    """

    loop_items = LOOP_ITEMS  # an answer ends once this many items in a row repeated earlier ones

    def __init__(
        self,
        base_model: str = DEFAULT_BASE_MODEL,
        adapter: Optional[str] = None,
        device: str = "auto",
        batch_size: int = 64,
        max_new_tokens: int = 256,
        show_progress: bool = False,
        merge_adapter: bool = True,
        use_prefix_cache: bool = True,
        dtype: str = "auto",
        prepare: Optional[Callable[["PreTrainedModel"], "PreTrainedModel"]] = None,
        decoding: str = "auto",
        draft_tokens: int = DRAFT_TOKENS,
        empty_answer_threshold: Optional[float] = None,
    ) -> None:
        if decoding not in DECODINGS:
            raise ValueError(Errors.E010.format(name="decoding", value=decoding, reason=f"use one of {list(DECODINGS)}"))
        self.base_model = base_model
        self.adapter = adapter
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.show_progress = show_progress
        self.merge_adapter = merge_adapter
        self.use_prefix_cache = use_prefix_cache
        self.dtype = dtype
        self.prepare = prepare
        self.decoding = decoding
        self.draft_tokens = draft_tokens
        self.empty_answer_threshold = None if empty_answer_threshold is None else check_threshold(empty_answer_threshold)
        self._opening = ""  # answer text the prompts being decoded already end with
        self._resolved: Optional[str] = None  # the loop `decoding` stands for on the loaded model
        self._decoder: Optional[StaticDecoder] = None
        self._model: Optional["PreTrainedModel"] = None
        self._tokenizer: Optional["PreTrainedTokenizerBase"] = None
        self._prefix: Optional[_PrefixCache] = None
        self._token_texts: Dict[int, str] = {}
        self._templates: Dict[Optional[Tuple[str, ...]], List[int]] = {}
        self.times = DecodeTimes()

    @property
    def model(self) -> "PreTrainedModel":
        """The model, loaded on first access."""
        self._load()
        return self._model

    @property
    def tokenizer(self) -> "PreTrainedTokenizerBase":
        """The tokenizer, loaded with the model on first access."""
        self._load()
        return self._tokenizer

    def _load(self) -> None:
        if self._model is None:
            model, self._tokenizer = load_model(
                self.base_model, adapter=self.adapter, device=self.device, merge_adapter=self.merge_adapter, dtype=self.dtype
            )
            model = use_transposed_head(attention.use_packed_decode_attention(model))
            self._model = self.prepare(model) if self.prepare is not None else model

    def warm_up(self, prompts: Sequence[str]) -> float:
        """Decode the `batch_size` longest of `prompts` and forget their times; return the seconds taken.

        Later batches of these prompts then find the weights loaded and the static decoder built
        (compiled and captured as a CUDA graph where the decoding does that).
        """
        started = time.perf_counter()
        lengths = [len(ids) for ids in encode_prompts(self.tokenizer, prompts)]
        longest = sorted(range(len(prompts)), key=lambda i: -lengths[i])[: self.batch_size]
        self.generate_token_ids([prompts[i] for i in longest])
        self.times = DecodeTimes()
        return time.perf_counter() - started

    def generate(self, prompts: Sequence[str]) -> List[str]:
        """Raw completions for `prompts`, in input order, without the EOS token."""
        raws = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in self.generate_token_ids(prompts)]
        if self.empty_answer_threshold is not None:
            self._second_look(prompts, raws)
        return raws

    def _second_look(self, prompts: Sequence[str], raws: List[str]) -> None:
        """Replace each answer `[]` whose probability is below the threshold by one generated with the list opened."""
        import torch

        started = time.perf_counter()
        opening = list_opening(self.tokenizer)
        silent = [index for index, raw in enumerate(raws) if raw.strip() == EMPTY_ANSWER]
        silent_ids = encode_prompts(self.tokenizer, [prompts[i] for i in silent])
        with torch.inference_mode(), attention_kernels():
            prefix = self._shared_prefix([ids + opening.shared for ids in silent_ids])
            probabilities = empty_answer_probabilities(
                self.model, self.tokenizer, silent_ids, self.batch_size, (prefix.token_ids, prefix.past_key_values) if prefix else None
            )
        unsure = [index for index, probability in zip(silent, probabilities) if probability < self.empty_answer_threshold]
        self.times.gate_seconds += time.perf_counter() - started
        if not unsure:
            return
        opened = opened_prompts(self.tokenizer, [prompts[i] for i in unsure])
        self._opening = opening.text
        try:
            continuations = self.generate_token_ids(opened)
        finally:
            self._opening = ""
        self.times.reopened_answers += len(unsure)
        for index, ids in zip(unsure, continuations):
            raws[index] = opening.text + self.tokenizer.decode(ids, skip_special_tokens=True)

    def _tracker(self) -> ArrayCloseTracker:
        """A tracker for one answer, having read the part of it the prompt already holds."""
        tracker = ArrayCloseTracker(loop_items=self.loop_items)
        tracker.feed(self._opening)
        return tracker

    def generate_token_ids(self, prompts: Sequence[str]) -> List[List[int]]:
        """The generated token ids for each prompt, in input order, without the EOS token."""
        import torch
        from tqdm.auto import tqdm

        tokenizer = self.tokenizer
        started = time.perf_counter()
        token_ids = encode_prompts(tokenizer, prompts)
        self.times.tokenize_seconds += time.perf_counter() - started
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        completions: List[List[int]] = [[] for _ in token_ids]
        with torch.inference_mode(), attention_kernels(), tqdm(
            total=len(token_ids), unit="prompt", desc="Generating", disable=not self.show_progress
        ) as progress:
            started = time.perf_counter()
            prefix = self._shared_prefix(token_ids)
            self.times.prefix_seconds += time.perf_counter() - started
            if self.resolved_decoding == "continuous":
                contexts = [token_ids[i] + self._draft_template(prompts[i]) for i in order] if self.draft_tokens else None
                self._decode_continuous([token_ids[i] for i in order], order, prefix, completions, progress, contexts)
                return completions
            refilling = self.resolved_decoding in REFILLING_DECODINGS
            steps_per_row = self.max_new_tokens + GRAPH_SYNC_STEPS if refilling else max(0, self.max_new_tokens - 1)
            decoder = self._static_decoder(len(order), len(token_ids[order[0]]) + steps_per_row) if order else None
            if decoder is not None and refilling:
                self._decode_refilling([token_ids[i] for i in order], order, prefix, decoder, completions, progress)
                return completions
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                prompts_ids = [token_ids[i] for i in batch]
                if decoder is not None:
                    outputs = self._decode_batch_static(prompts_ids, prefix, decoder)
                else:
                    outputs = self._decode_batch(prompts_ids, prefix)
                self.times.batches += 1
                for index, generated in zip(batch, outputs):
                    completions[index] = generated
                progress.update(len(batch))
        return completions

    def _shared_prefix(self, token_ids: List[List[int]]) -> Optional[_PrefixCache]:
        """The cached states of a token prefix all prompts share, each prompt keeping a token after it.

        The cache is kept between calls. When new prompts diverge from it, the part they still
        share with it (the instruction, typically) is cached instead, so a run of one-prompt calls
        settles on the common instruction rather than recomputing whole prompts.
        """
        if not self.use_prefix_cache or not token_ids:
            return None
        common = token_ids[0][: min(len(ids) for ids in token_ids) - 1]
        for ids in token_ids[1:]:
            common = common[: _common_length(common, ids)]
        if self._prefix is not None:
            shared = self._prefix.token_ids[: _common_length(self._prefix.token_ids, common)]
            common = list(shared) if shared else common
        if not common:
            return None
        if self._prefix is None or self._prefix.token_ids != tuple(common):
            import torch
            from transformers import DynamicCache

            input_ids = torch.tensor([common], device=self.model.device)
            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self._cache_argument(): cache})
            self._prefix = _PrefixCache(tuple(common), cache)
        return self._prefix

    def _decode_batch(self, token_ids: List[List[int]], prefix: Optional[_PrefixCache]) -> List[List[int]]:
        """Greedy continuations of one batch; the prompts all start with `prefix` when it is given."""
        import torch

        model = self.model
        device = model.device
        size = len(token_ids)
        input_ids, attention_mask, positions, cache = prefill_inputs(
            model, token_ids, len(prefix.token_ids) if prefix else 0, prefix.past_key_values if prefix else None,
            self.tokenizer.pad_token_id,
        )

        cache_argument = self._cache_argument()
        eos_ids = self._eos_ids()
        trackers = [self._tracker() for _ in range(size)]
        generated: List[List[int]] = [[] for _ in range(size)]
        active = list(range(size))
        times = self.times
        started = time.perf_counter()
        for step in range(self.max_new_tokens):
            logits = last_token_logits(model, input_ids, attention_mask, positions, cache_argument, cache)
            next_tokens = logits.argmax(dim=-1)
            tokens = next_tokens.tolist()
            now = time.perf_counter()
            if step == 0:
                times.prefill_seconds += now - started
            else:
                times.decode_seconds += now - started
                times.decode_steps += 1
                times.row_steps += len(active)
            started = now
            keep = []
            for slot, token in enumerate(tokens):
                row = active[slot]
                if not self._append_token(generated[row], trackers[row], token, eos_ids):
                    keep.append(slot)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                next_tokens, attention_mask, positions = next_tokens[index], attention_mask[index], positions[index]
                active = [active[slot] for slot in keep]
            input_ids = next_tokens.unsqueeze(1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], 1)
            positions = positions[:, -1:] + 1
        return generated

    def _draft_template(self, prompt: str) -> List[int]:
        """The tokens of an answer template for the labels the prompt asks for (none for other prompts)."""
        labels = prompt_labels(prompt)
        key = tuple(labels) if labels else None
        if key not in self._templates:
            self._templates[key] = self.tokenizer.encode(draft_template(labels), add_special_tokens=False) if labels else []
        return self._templates[key]

    def _decode_continuous(
        self, token_ids: List[List[int]], order: List[int], prefix: Optional[_PrefixCache], completions: List[List[int]],
        progress, contexts: Optional[List[List[int]]],
    ) -> None:
        """Greedy continuations of all prompts by continuous batching; `order[i]` is where prompt i's
        tokens go; drafts are looked up in `contexts` when given."""
        eos_ids = self._eos_ids()
        trackers = [self._tracker() for _ in token_ids]

        def finished(index: int, token: int) -> bool:
            done = self._append_token(completions[order[index]], trackers[index], token, eos_ids)
            progress.update(int(done))
            return done

        decode_continuous(
            self.model, token_ids, len(prefix.token_ids) if prefix else 0, prefix.past_key_values if prefix else None,
            pad_id=self.tokenizer.pad_token_id, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
            cache_argument=self._cache_argument(), finished=finished, times=self.times,
            contexts=contexts, draft_tokens=self.draft_tokens,
        )
        progress.update(len(token_ids) - progress.n)

    def _decode_refilling(
        self, token_ids: List[List[int]], order: List[int], prefix: Optional[_PrefixCache], decoder: StaticDecoder,
        completions: List[List[int]], progress,
    ) -> None:
        """Greedy continuations of all prompts in the static decoder's rows, a finished row taking
        the next waiting prompt (once a quarter of the rows are free); `order[i]` is where prompt i's tokens go."""
        prefix_length = len(prefix.token_ids) if prefix else 0
        if prefix and decoder.prefix_tokens != prefix.token_ids:
            decoder.set_prefix(prefix.token_ids, prefix.past_key_values)
        decoder.start_refilling(prefix_length)
        eos_ids = self._eos_ids()
        trackers = [self._tracker() for _ in token_ids]
        counts = [0] * len(token_ids)
        owners: List[Optional[int]] = [None] * decoder.batch_size  # the prompt each row decodes
        waiting = list(range(len(token_ids)))[::-1]  # popped from the end: the longest prompts first
        refill = max(1, decoder.batch_size // REFILL_FRACTION)
        chunk = GRAPH_SYNC_STEPS if decoder.graph is not None else 1
        times = self.times

        def finished(prompt: int, token: int) -> bool:
            counts[prompt] += 1
            done = self._append_token(completions[order[prompt]], trackers[prompt], token, eos_ids)
            done = done or counts[prompt] >= self.max_new_tokens
            progress.update(int(done))
            return done

        while waiting or any(owner is not None for owner in owners):
            free = [row for row, owner in enumerate(owners) if owner is None]
            started = time.perf_counter()
            if waiting and (len(free) == len(owners) or len(free) >= refill):
                admitted = [waiting.pop() for _ in range(min(len(free), len(waiting)))]
                first_tokens = decoder.admit(free[: len(admitted)], [token_ids[i] for i in admitted],
                                             prefix.past_key_values if prefix else None, self.tokenizer.pad_token_id, chunk)
                times.prefill_seconds += time.perf_counter() - started
                times.batches += 1
                for row, prompt, token in zip(free, admitted, first_tokens):
                    if finished(prompt, token):
                        decoder.release(row)
                    else:
                        owners[row] = prompt
                continue
            steps = decoder.decode_refilling(chunk)
            times.decode_seconds += time.perf_counter() - started
            times.decode_steps += len(steps[0])
            times.row_steps += len(steps[0]) * decoder.batch_size
            for row, prompt in enumerate(owners):
                if prompt is not None and any(finished(prompt, token) for token in steps[row]):
                    owners[row] = None
                    decoder.release(row)

    @property
    def resolved_decoding(self) -> str:
        """The decoding loop in use: `decoding`, or for "auto" the refilling static loop on CUDA and
        continuous batching elsewhere where the model's cache allows them, else the dynamic loop.
        Checked once, on the loaded model."""
        if self._resolved is None:
            resolved = self.decoding
            if resolved == "auto":
                resolved = "static-continuous" if self._graphs_available() else "continuous"
                if not self._cache_allows(resolved):
                    resolved = "dynamic"
            elif not self._cache_allows(resolved):
                raise ValueError(Errors.E010.format(
                    name="decoding", value=resolved, reason="this model's cache has sliding-window layers; use dynamic"))
            self._resolved = resolved
        return self._resolved

    def _cache_allows(self, decoding: str) -> bool:
        """Whether the model's cache allows this decoding (with sliding-window layers only the dynamic loop works)."""
        if decoding in STATIC_DECODINGS:
            return supports_static_cache(self.model)
        if decoding == "continuous":
            from transformers import DynamicCache

            return supports_joined_rows(DynamicCache(config=self.model.config))
        return True

    def _decode_batch_static(
        self, token_ids: List[List[int]], prefix: Optional[_PrefixCache], decoder: StaticDecoder
    ) -> List[List[int]]:
        """Greedy continuations of one batch with the static decoder, padded to its rows with copies of the last prompt."""
        prefix_length = len(prefix.token_ids) if prefix else 0
        if prefix and decoder.prefix_tokens != prefix.token_ids:
            decoder.set_prefix(prefix.token_ids, prefix.past_key_values)
        suffixes = [ids[prefix_length:] for ids in token_ids]
        padded = suffixes + [suffixes[-1]] * (decoder.batch_size - len(suffixes))
        eos_ids = self._eos_ids()
        trackers = [self._tracker() for _ in suffixes]
        generated: List[List[int]] = [[] for _ in suffixes]
        times = self.times
        started = time.perf_counter()
        first_tokens = decoder.prefill(padded, prefix_length, self.tokenizer.pad_token_id)
        times.prefill_seconds += time.perf_counter() - started
        open_rows = {
            row for row in range(len(suffixes))
            if not self._append_token(generated[row], trackers[row], first_tokens[row], eos_ids)
        }
        chunk = GRAPH_SYNC_STEPS if decoder.graph is not None else 1
        while open_rows:
            started = time.perf_counter()
            steps = decoder.decode(chunk)
            times.decode_seconds += time.perf_counter() - started
            if not steps or not steps[0]:
                break
            times.decode_steps += len(steps[0])
            times.row_steps += len(steps[0]) * decoder.batch_size
            for row in sorted(open_rows):
                if any(self._append_token(generated[row], trackers[row], token, eos_ids) for token in steps[row]):
                    open_rows.discard(row)
        return generated

    def _static_decoder(self, prompts: int, slots: int) -> Optional[StaticDecoder]:
        """A static decoder for batches of these prompts, needing `slots` cache slots per row, or None to decode with the dynamic loop.

        Rows: the batch size, or the next power of two above a smaller number of prompts, so
        that calls with similar numbers of prompts share one decoder (and its CUDA graph). The
        current decoder is kept while the prompts fit it.
        """
        if self.resolved_decoding not in STATIC_DECODINGS:
            return None
        rows = min(self.batch_size, 1 << (prompts - 1).bit_length())
        max_steps = max(0, self.max_new_tokens - 1)
        decoder = self._decoder
        if decoder is None or decoder.batch_size != rows or decoder.cache_length < slots:
            self._decoder = None  # free the old cache before allocating the new one
            use_graph = self._graphs_available()
            try:
                decoder = self._decoder = StaticDecoder(
                    self.model, rows, rounded_cache_length(slots), max_steps,
                    self._cache_argument(), use_graph, compiled=self.resolved_decoding in COMPILED_DECODINGS,
                )
            except RuntimeError as error:
                if not use_graph:
                    raise
                warn(Warnings.W004.format(error=str(error).splitlines()[0] if str(error) else type(error).__name__))
                self._resolved = "dynamic"
                return None
        return decoder

    def _graphs_available(self) -> bool:
        """Whether decode steps can be captured as CUDA graphs (the model is on a CUDA device)."""
        return self.model.device.type == "cuda"

    def _cache_argument(self) -> str:
        """The forward argument that takes the key/value cache (`cache` in newer transformers)."""
        return cache_keyword(self.model)

    def _append_token(self, generated: List[int], tracker: ArrayCloseTracker, token: int, eos_ids: Set[int]) -> bool:
        """Add `token` to a row's output unless it is EOS; True once the row has finished."""
        if token in eos_ids:
            return True
        generated.append(token)
        if not tracker.feed(self._token_text(token)):
            return False
        self.times.looping_answers += tracker.looped
        return True

    def _eos_ids(self) -> Set[int]:
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
        ids.add(self.tokenizer.eos_token_id)
        return {token for token in ids if token is not None}

    def _token_text(self, token: int) -> str:
        text = self._token_texts.get(token)
        if text is None:
            text = self._token_texts[token] = self.tokenizer.decode([token])
        return text


def _common_length(first: Sequence[int], second: Sequence[int]) -> int:
    """The length of the longest common prefix of two token sequences."""
    length = min(len(first), len(second))
    return next((i for i in range(length) if first[i] != second[i]), length)
