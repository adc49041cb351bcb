"""The spacy-llm route: task `bioselecttune.NER.v1` and model `bioselecttune.HF.v1` for `factory = "llm"`.

They use the same sentence segmentation, prompt, parser and alignment as `bioselecttune_ner`,
so both routes give the same entities for the same model. Each doc is one "shard" whose
prompts are its sentences; docs are never re-joined, so `Doc.text` is never altered.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc
from spacy.training import Example
from spacy_llm.registry import registry

from ..engine.answer_format import ANSWER_CUE, build_prompt, check_labels, prompt_label_groups, prompt_prefix
from ..engine.loading import DEFAULT_BASE_MODEL
from ..errors import Errors
from .component import ALIGNMENT_MODES, DEFAULT_CONFIG, SentenceAnswer, annotate_doc, build_generator, doc_segments
from .scorer import score_bioselecttune

if TYPE_CHECKING:
    from ..engine.generate import Generator


class BioSelectTuneNERTask:
    """Prompts one JSON-answer instruction per sentence and label list, and maps the answers to `doc.ents`."""

    def __init__(
        self,
        labels: Sequence[str],
        max_sentence_chars: int,
        alignment_mode: str,
        scorer: Callable[..., Dict[str, Any]],
        label_groups: Optional[Sequence[Sequence[str]]] = None,
    ) -> None:
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(Errors.E010.format(name="alignment_mode", value=alignment_mode, reason=f"use one of {ALIGNMENT_MODES}"))
        self._labels = tuple(check_labels(labels))
        self.groups = prompt_label_groups(self._labels, label_groups or [])
        self.max_sentence_chars = max_sentence_chars
        self.alignment_mode = alignment_mode
        self._scorer = scorer

    @property
    def labels(self) -> Tuple[str, ...]:
        return self._labels

    @property
    def prompt_template(self) -> str:
        return prompt_prefix(self.groups[0]) + "{text}" + ANSWER_CUE

    def generate_prompts(
        self, docs: Iterable[Doc], context_length: Optional[int] = None
    ) -> Iterable[Tuple[Iterable[str], Iterable[Doc]]]:
        """One prompt per sentence and label list of each doc, with the whole doc as its only shard.

        context_length: unused; sentences are capped at `max_sentence_chars` instead.
        """
        for doc in docs:
            segments = doc_segments(doc, self.max_sentence_chars)
            yield [build_prompt(doc.text[start:end], group) for group in self.groups for start, end in segments], [doc]

    def parse_responses(self, shards: Iterable[Iterable[Doc]], responses: Iterable[Iterable[str]]) -> Iterable[Doc]:
        """Annotate each doc with the entities its sentences' answers name."""
        for doc_shards, doc_responses in zip(shards, responses):
            (doc,) = list(doc_shards)
            segments = doc_segments(doc, self.max_sentence_chars)
            asked = [(start, end, group) for group in self.groups for start, end in segments]
            answers = [SentenceAnswer(start, end, raw, group) for (start, end, group), raw in zip(asked, doc_responses)]
            annotate_doc(doc, answers, self._labels, self.alignment_mode)
            yield doc

    def scorer(self, examples: Iterable[Example]) -> Dict[str, Any]:
        return self._scorer(examples)


class BioSelectTuneHFModel:
    """Answers every prompt of a batch of docs with one batched greedy generator call."""

    def __init__(
        self,
        base_model: str,
        adapter: Optional[str],
        device: str,
        batch_size: int,
        max_new_tokens: int,
        context_length: int,
        dtype: str = "auto",
        decoding: str = "auto",
        empty_answer_threshold: Optional[float] = None,
    ) -> None:
        self.base_model = base_model
        self.adapter = adapter
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._context_length = context_length
        self.dtype = dtype
        self.decoding = decoding
        self.empty_answer_threshold = empty_answer_threshold
        self._generator: Optional["Generator"] = None

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def generator(self) -> "Generator":
        """The generator, built on first use after the adapter's format version is checked."""
        if self._generator is None:
            self._generator = build_generator(
                self.base_model, self.adapter, (), self.device, self.batch_size, self.max_new_tokens, self.dtype, self.decoding,
                self.empty_answer_threshold,
            )
        return self._generator

    def __call__(self, prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        per_doc: List[List[str]] = [list(doc_prompts) for doc_prompts in prompts]
        flat = [prompt for doc_prompts in per_doc for prompt in doc_prompts]
        answers = iter(self.generator.generate(flat) if flat else [])
        return [[next(answers) for _ in doc_prompts] for doc_prompts in per_doc]


@registry.llm_tasks("bioselecttune.NER.v1")
def make_ner_task(
    labels: Sequence[str] = ("Disease", "Chemical", "Gene"),
    max_sentence_chars: int = 1000,
    alignment_mode: str = "expand",
    scorer: Optional[Callable[..., Dict[str, Any]]] = None,
    label_groups: Optional[List[List[str]]] = None,
) -> BioSelectTuneNERTask:
    """The BioSelectTune JSON-answer NER task; `scorer` defaults to `bioselecttune.Scorer.v1`.

    label_groups: the label lists the adapter was trained with (its `bioselecttune.json`
    `label_sets`); the labels are then asked in prompts of those lists, as the component's
    `prompts="trained"` does. None: one prompt names every label.
    """
    return BioSelectTuneNERTask(labels, max_sentence_chars, alignment_mode, scorer or score_bioselecttune, label_groups)


@registry.llm_models("bioselecttune.HF.v1")
def make_hf_model(
    base_model: str = DEFAULT_BASE_MODEL,
    adapter: Optional[str] = None,
    device: str = "auto",
    batch_size: int = DEFAULT_CONFIG["batch_size"],
    max_new_tokens: int = DEFAULT_CONFIG["max_new_tokens"],
    context_length: int = 8192,
    dtype: str = "auto",
    decoding: str = "auto",
    empty_answer_threshold: Optional[float] = None,
) -> BioSelectTuneHFModel:
    """A local causal LLM (plus optional LoRA adapter), loaded on first use; `dtype`, `decoding` and
    `empty_answer_threshold` as for the component."""
    return BioSelectTuneHFModel(base_model, adapter, device, batch_size, max_new_tokens, context_length, dtype, decoding, empty_answer_threshold)
