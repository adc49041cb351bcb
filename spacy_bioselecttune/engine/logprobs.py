"""Answer-token cross-entropy from hidden states, shared by IFD scoring and training.

The output layer is applied only at the positions that predict answer tokens, a few rows at a
time, so logits over the whole vocabulary for whole sequences never exist (a 262k-token
vocabulary would not fit otherwise). When every sequence of a batch starts with the same tokens
(the instruction), their key/value states can be computed once and reused (`PrefixCache`).
The answer positions are found on the host and batches reach a GPU by non-blocking copies, so
computing a loss never makes the host wait for the device (it can queue the next kernels).
"""
from __future__ import annotations

import copy
import inspect
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from ..errors import Errors
from .encoding import EncodedExample

if TYPE_CHECKING:
    import torch

LOGIT_BUDGET = 1 << 24  # most logits (rows x vocabulary) computed at once


@dataclass
class AnswerLossSums:
    """Per-example sums of answer-token cross-entropy and the number of tokens in each sum."""

    sums: "torch.Tensor"
    counts: "torch.Tensor"

    def means(self) -> "torch.Tensor":
        """Per-example mean cross-entropy over answer tokens."""
        return self.sums / self.counts.clamp(min=1)

    def token_mean(self) -> "torch.Tensor":
        """Mean cross-entropy over all answer tokens of the batch (the training loss)."""
        return self.sums.sum() / self.counts.sum().clamp(min=1)


@dataclass
class PrefixCache:
    """Key/value states of a token prefix that every sequence of a batch starts with (one row)."""

    token_ids: Tuple[int, ...]
    states: object = field(repr=False)

    def __len__(self) -> int:
        return len(self.token_ids)

    def expanded(self, rows: int) -> object:
        """A copy of the states for `rows` sequences, for one batch to append its own states to.

        The prefix's keys and values enter the copy as broadcast views, not copies, so while
        gradients are recorded (training) they flow back through the one prefix computation.
        """
        views = {}
        for layer in self.states.layers:
            for tensor in (layer.keys, layer.values):
                views[id(tensor)] = tensor.expand(rows, *tensor.shape[1:])
        return copy.deepcopy(self.states, views)


def shared_prompt_prefix(examples: Sequence[EncodedExample]) -> List[int]:
    """The longest token prefix all examples' prompts share, leaving each prompt's last token out of it.

    The last prompt token stays outside so that the batch's own hidden states predict the first answer token.
    """
    if not examples:
        return []
    shared = examples[0].input_ids[: min(example.answer_start for example in examples) - 1]
    for example in examples[1:]:
        length = min(len(shared), len(example.input_ids))
        shared = shared[: next((i for i in range(length) if shared[i] != example.input_ids[i]), length)]
    return list(shared)


def prefix_cache(model, token_ids: Sequence[int]) -> PrefixCache:
    """Run the decoder over `token_ids` once and keep their key/value states."""
    import torch
    from transformers import DynamicCache

    decoder = unwrapped_model(model).get_decoder()
    input_ids = to_device(torch.tensor([list(token_ids)]), _device(model))
    states = DynamicCache(config=decoder.config)
    decoder(input_ids=input_ids, use_cache=True, **{cache_keyword(decoder): states})
    return PrefixCache(tuple(token_ids), states)


def collate(examples: Sequence[EncodedExample], pad_id: int, prefix_length: int = 0) -> Dict[str, "torch.Tensor"]:
    """Right-pad encoded examples into `input_ids`, `attention_mask` and `answer_mask` tensors.

    `answer_mask[i, t]` is True where token t of example i is an answer token the loss covers.
    prefix_length: leave out this many leading tokens, a prefix whose states are cached (see `PrefixCache`);
        it must end before each example's last prompt token.
    """
    import numpy
    import torch

    too_short = [example.answer_start for example in examples if example.answer_start <= prefix_length]
    if prefix_length and too_short:
        allowed = f"shorter than every prompt in the batch (the shortest has {min(too_short)} tokens)"
        raise ValueError(Errors.E405.format(name="prefix_length", value=prefix_length, allowed=allowed))
    # one flat array scattered into the padded grid: no per-row tensors or nested-list parsing
    lengths = numpy.array([len(example.input_ids) - prefix_length for example in examples])
    starts = numpy.array([max(example.answer_start - prefix_length, 1) for example in examples])
    positions = numpy.arange(lengths.max())[None, :]
    in_sequence = positions < lengths[:, None]
    grid = numpy.full(in_sequence.shape, pad_id, dtype=numpy.int64)
    grid[in_sequence] = numpy.fromiter(
        itertools.chain.from_iterable(example.input_ids[prefix_length:] for example in examples), dtype=numpy.int64
    )
    input_ids = torch.from_numpy(grid)
    attention_mask = torch.from_numpy(in_sequence.astype(numpy.int64))
    answer_mask = torch.from_numpy(in_sequence & (positions >= starts[:, None]))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}


def answer_token_loss_sums(
    model, batch: Dict[str, "torch.Tensor"], prefix: Optional[PrefixCache] = None
) -> AnswerLossSums:
    """Sum the cross-entropy of each example's answer tokens, given everything before them.

    model: a causal LM, plain or wrapped by PEFT.
    batch: the output of `collate`, left on the host (it is copied to the model's device; its
        answer positions are read on the host); with `prefix`, collated with `prefix_length=len(prefix)`.
    prefix: the cached states of the tokens every example starts with.
    """
    import torch

    base = unwrapped_model(model)
    device = _device(model)
    rows, width = batch["input_ids"].shape
    # each answer token is predicted by the hidden state one position before it
    target_mask = batch["answer_mask"][:, 1:].cpu()
    target_rows, target_columns = target_mask.nonzero(as_tuple=True)
    hidden_index = to_device(target_rows * width + target_columns, device)
    target_rows = to_device(target_rows, device)
    counts = to_device(target_mask.sum(dim=1), device)
    input_ids = to_device(batch["input_ids"], device)
    attention_mask = to_device(batch["attention_mask"], device)
    decoder = base.get_decoder()
    if prefix is None:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    else:
        prefix_mask = attention_mask.new_ones((rows, len(prefix)))
        positions = torch.arange(len(prefix), len(prefix) + width, device=device).expand(rows, width)
        hidden = decoder(
            input_ids=input_ids,
            attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
            position_ids=positions,
            use_cache=True,
            **{cache_keyword(decoder): prefix.expanded(rows)},
        ).last_hidden_state
    predicting = hidden.reshape(rows * width, -1).index_select(0, hidden_index)
    targets = input_ids.reshape(-1).index_select(0, hidden_index + 1)
    token_losses = _token_cross_entropy(base, predicting, targets)
    sums = torch.zeros(rows, dtype=token_losses.dtype, device=device).index_add(0, target_rows, token_losses)
    return AnswerLossSums(sums, counts)


def answer_token_losses(
    model, batch: Dict[str, "torch.Tensor"], prefix: Optional[PrefixCache] = None
) -> "torch.Tensor":
    """Per-example mean cross-entropy over answer tokens (shape: batch size)."""
    return answer_token_loss_sums(model, batch, prefix).means()


def unwrapped_model(model):
    """The transformers model under a PEFT wrapper, or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def to_device(tensor: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """`tensor` on `device`; from the host to a GPU through pinned memory, without waiting for the copy."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _device(model) -> "torch.device":
    return unwrapped_model(model).get_output_embeddings().weight.device


def cache_keyword(model) -> str:
    """The forward argument that takes the key/value cache (`cache` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(unwrapped_model(model).forward).parameters else "past_key_values"


def _token_cross_entropy(base, hidden: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """Cross-entropy of each target given its hidden state, computing logits a chunk of rows at a time.

    While gradients are recorded, each chunk's logits are recomputed in the backward pass
    instead of being kept, so memory stays bounded in training too.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    lm_head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)

    def chunk_losses(chunk_hidden: "torch.Tensor", chunk_targets: "torch.Tensor") -> "torch.Tensor":
        logits = lm_head(chunk_hidden).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return torch.nn.functional.cross_entropy(logits, chunk_targets, reduction="none")

    chunk_rows = max(1, LOGIT_BUDGET // lm_head.weight.shape[0])
    pieces = []
    for start in range(0, hidden.shape[0], chunk_rows):
        args = (hidden[start : start + chunk_rows], targets[start : start + chunk_rows])
        if torch.is_grad_enabled() and hidden.requires_grad:
            pieces.append(checkpoint(chunk_losses, *args, use_reentrant=False))
        else:
            pieces.append(chunk_losses(*args))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)
