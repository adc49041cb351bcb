"""Answer-token cross-entropy from hidden states, shared by IFD scoring and training.

The output layer is applied only at the positions that predict answer tokens, a few rows at a
time, so logits over the whole vocabulary for whole sequences never exist (a 262k-token
vocabulary would not fit otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Sequence

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


def collate(examples: Sequence[EncodedExample], pad_id: int) -> Dict[str, "torch.Tensor"]:
    """Right-pad encoded examples into `input_ids`, `attention_mask` and `answer_mask` tensors.

    `answer_mask[i, t]` is True where token t of example i is an answer token the loss covers.
    """
    import torch

    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    answer_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :length] = 1
        answer_mask[row, max(example.answer_start, 1) : length] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}


def answer_token_loss_sums(model, batch: Dict[str, "torch.Tensor"]) -> AnswerLossSums:
    """Sum the cross-entropy of each example's answer tokens, given everything before them.

    model: a causal LM, plain or wrapped by PEFT.
    batch: the output of `collate`, on any device (it is moved to the model's).
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = base.get_output_embeddings().weight.device
    input_ids = batch["input_ids"].to(device)
    target_mask = batch["answer_mask"].to(device)[:, 1:]
    hidden = base.get_decoder()(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    predicting = hidden[:, :-1][target_mask]
    targets = input_ids[:, 1:][target_mask]
    rows = torch.arange(input_ids.shape[0], device=device).unsqueeze(1).expand_as(target_mask)[target_mask]
    token_losses = _token_cross_entropy(base, predicting, targets)
    sums = torch.zeros(input_ids.shape[0], dtype=token_losses.dtype, device=device).index_add(0, rows, token_losses)
    counts = target_mask.sum(dim=1)
    return AnswerLossSums(sums, counts)


def answer_token_losses(model, batch: Dict[str, "torch.Tensor"]) -> "torch.Tensor":
    """Per-example mean cross-entropy over answer tokens (shape: batch size)."""
    return answer_token_loss_sums(model, batch).means()


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
