"""A second look at empty answers: keep `[]` only where the model is sure of it.

The answer `[]` and a list of names share their first token(s) (`[` for SmolLM2) and part at
the next one (`]` or `{"`), so one greedy choice decides whether a sentence gets any entity.
An adapter that has not settled that choice (few training steps) answers `[]` for many
sentences that do name entities, while naming them well where it does answer. With a threshold,
each prompt answered `[]` is scored once more: the probability of closing the list right after
opening it is read from one forward pass, and below the threshold the answer is generated again
with its list already opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from ..errors import Errors
from .answer_format import EMPTY_ANSWER, render_answer
from .encoding import encode_prompts
from .records import Mention

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ListOpening:
    """How a tokenizer writes the start of an answer.

    shared: the tokens `[]` and a non-empty list both begin with.
    close: the token after them that makes the answer `[]`.
    opened: the tokens of a non-empty list up to and including the one where it parts from `[]`.
    text: `opened` as text, appended to a prompt to have the model go on writing a list.
    """

    shared: List[int]
    close: int
    opened: List[int]
    text: str


def list_opening(tokenizer: "PreTrainedTokenizerBase") -> ListOpening:
    """Where `[]` and a non-empty answer part, in this tokenizer's tokens."""
    empty = tokenizer(EMPTY_ANSWER, add_special_tokens=False)["input_ids"]
    listed = tokenizer(render_answer([Mention("Label", "name")]), add_special_tokens=False)["input_ids"]
    shared = 0
    while shared < min(len(empty), len(listed)) and empty[shared] == listed[shared]:
        shared += 1
    if shared >= len(empty) or shared >= len(listed):
        raise ValueError(Errors.E012.format(reason=f"'{EMPTY_ANSWER}' tokenizes as {empty}, a list as {listed[:8]}..."))
    opened = listed[: shared + 1]
    return ListOpening(empty[:shared], empty[shared], opened, tokenizer.decode(opened))


def empty_answer_probabilities(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    prompt_ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    prefix: Optional[Tuple[Sequence[int], object]] = None,
) -> List[float]:
    """For each encoded prompt (`encode_prompts`), the probability that its answer closes at once (`]` right after `[`).

    prefix: token ids every prompt starts with and their cached key/value states (batch size 1),
    so that only the rest of each prompt is run; prompts are batched by length.
    """
    import torch

    from .logprobs import cache_keyword
    from .static_decode import last_token_logits, prefill_inputs

    opening = list_opening(tokenizer)
    token_ids = [list(ids) + opening.shared for ids in prompt_ids]
    prefix_ids, prefix_cache = prefix if prefix is not None else ((), None)
    if any(ids[: len(prefix_ids)] != list(prefix_ids) for ids in token_ids):
        raise ValueError(Errors.E010.format(name="prefix", value=list(prefix_ids)[:8], reason="every prompt must start with it"))
    order = sorted(range(len(token_ids)), key=lambda index: len(token_ids[index]))
    probabilities = [0.0] * len(token_ids)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = prefill_inputs(model, [token_ids[i] for i in batch], len(prefix_ids), prefix_cache, tokenizer.pad_token_id)
            logits = last_token_logits(model, *inputs[:3], cache_keyword(model), inputs[3])
            for index, probability in zip(batch, logits.float().softmax(dim=-1)[:, opening.close].tolist()):
                probabilities[index] = probability
    return probabilities


def opened_prompts(tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[str]) -> List[str]:
    """The prompts with the answer's list opened, checked to tokenize as prompt tokens plus the opening's.

    Raises when the tokenizer merges the opening into the prompt's last tokens, since the model
    would then continue from tokens it never saw in training.
    """
    opening = list_opening(tokenizer)
    opened = [prompt + opening.text for prompt in prompts]
    for prompt, plain, joined in zip(prompts, encode_prompts(tokenizer, prompts), encode_prompts(tokenizer, opened)):
        if joined != plain + opening.opened:
            raise ValueError(Errors.E012.format(reason=f"'{opening.text}' after the prompt {prompt[-40:]!r} tokenizes differently"))
    return opened


def check_threshold(threshold: float) -> float:
    """`threshold` if it is a probability above 0 and at most 1."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(Errors.E010.format(name="empty_answer_threshold", value=threshold, reason="a probability above 0 and at most 1"))
    return threshold
