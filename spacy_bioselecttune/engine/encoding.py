"""Token ids for prompts and prompt-answer pairs, tokenized exactly as generation sees them.

The prompt and the answer are tokenized separately, because at inference the model reads the
prompt's tokens and then writes the answer's tokens itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Sequence

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + answer + EOS; the answer's tokens start at `answer_start`."""

    input_ids: List[int]
    answer_start: int

    @property
    def answer_length(self) -> int:
        """The number of answer tokens, EOS included."""
        return len(self.input_ids) - self.answer_start


def leading_special_ids(tokenizer: "PreTrainedTokenizerBase") -> List[int]:
    """The BOS token id as a one-item list if the tokenizer starts sequences with it, else []."""
    added = tokenizer("", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and added[:1] == [bos] else []


def encode_prompt(tokenizer: "PreTrainedTokenizerBase", prompt: str) -> List[int]:
    """Token ids of a prompt: BOS if the model uses one, then the prompt's tokens."""
    return leading_special_ids(tokenizer) + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_prompts(tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[str]) -> List[List[int]]:
    """`encode_prompt` for many prompts in one batched tokenizer call."""
    if not prompts:
        return []
    lead = leading_special_ids(tokenizer)
    return [lead + ids for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


def encode_example(tokenizer: "PreTrainedTokenizerBase", prompt: str, answer: str) -> EncodedExample:
    """Encode a training or scoring pair; the loss covers positions `answer_start .. len(input_ids) - 1`.

    With an empty prompt and no BOS token the first answer token has nothing to be predicted
    from, so the loss then starts at position 1.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return EncodedExample(prompt_ids + answer_ids + [tokenizer.eos_token_id], len(prompt_ids))


def encode_examples(tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[str], answers: Sequence[str]) -> List[EncodedExample]:
    """`encode_example` for many pairs at once: one batched tokenizer call for the prompts and one for the answers."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        return []
    prompt_ids = encode_prompts(tokenizer, prompts)
    answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id]
    return [EncodedExample(p + a + eos, len(p)) for p, a in zip(prompt_ids, answer_ids)]
