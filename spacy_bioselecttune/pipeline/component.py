"""The `bioselecttune_ner` component: a fine-tuned LLM names entities per sentence, mapped to `Doc.ents`.

Inference side of BioSelectTune (Chen, Su and Sun, arXiv 2512.22738, Sec. 3.1): each sentence
is sent to the model as an instruction prompt, the JSON answer is parsed, and every named
entity is placed at its exact character offsets in the unchanged `Doc.text`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import minibatch

from ..engine.align import align_mentions
from ..engine.answer_format import FORMAT_VERSION, build_prompt, check_labels, prompt_label_groups
from ..engine.empty_answer_gate import check_threshold
from ..engine.generate import DECODINGS
from ..engine.loading import DEFAULT_BASE_MODEL, DTYPES, KNOWN_MODELS
from ..engine.parser import parse_answer
from ..engine.sentences import split_long, split_sentences
from ..errors import Errors, Warnings, warn
from .scorer import COUNT_KEYS, DROPPED_NAMES_KEY, USER_DATA_KEY

if TYPE_CHECKING:
    from ..engine.generate import Generator

ALIGNMENT_MODES = ("strict", "contract", "expand")
PROMPT_MODES = ("trained", "joint")
ADAPTER_METADATA = "bioselecttune.json"
PACKAGE_ADAPTERS = Path(__file__).parent.parent / "adapters"
SETTINGS_FILE = "cfg"
ADAPTER_DIR = "adapter"
AUTO_ADAPTER = "auto"
# The adapter shipped under `adapters/` for each registered base model, used by adapter="auto".
SHIPPED_ADAPTERS = {"smollm2-135m": "smollm2-135m-union"}

DEFAULT_CONFIG = {
    "labels": ["Disease", "Chemical", "Gene"],
    "base_model": DEFAULT_BASE_MODEL,
    "adapter": AUTO_ADAPTER,
    "device": "auto",
    "dtype": "auto",
    "decoding": "auto",
    "empty_answer_threshold": None,
    "batch_size": 64,
    "max_new_tokens": 256,
    "max_sentence_chars": 1000,
    "alignment_mode": "expand",
    "prompts": "trained",
    "scorer": {"@scorers": "bioselecttune.Scorer.v1"},
}


@Language.factory(
    "bioselecttune_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config=DEFAULT_CONFIG,
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_bioselecttune_ner(
    nlp: Language,
    name: str,
    labels: List[str],
    base_model: str,
    adapter: Optional[str],
    device: str,
    dtype: str,
    decoding: str,
    empty_answer_threshold: Optional[float],
    batch_size: int,
    max_new_tokens: int,
    max_sentence_chars: int,
    alignment_mode: str,
    prompts: str,
    scorer: Optional[Callable],
) -> "BioSelectTuneNER":
    """Build the component; no weights are loaded until first use, `initialize` or `from_disk`.

    labels: entity types to ask for (a subset of the adapter's training labels).
    base_model: a registered model name, a checkpoint directory or a .gguf file.
    adapter: a LoRA adapter directory, a name under the package's `adapters/`, "auto" (the adapter
        shipped for `base_model`, if any; smollm2-135m has one) or None (the bare base model).
    dtype: weights' dtype: "auto" (bf16 on CUDA, fp32 on CPU), "float32" or "bfloat16".
    decoding: "auto" ("static-continuous" on CUDA, "continuous" elsewhere; "dynamic" for
        sliding-window caches), "dynamic" (finished rows leave a
        batch), "continuous" (waiting sentences take
        their places), "static" (fixed shapes, CUDA graphs) or "compiled" (the static loop with
        its step compiled by torch.compile; the first batch compiles it), or "static-continuous"
        and "compiled-continuous" (those loops refilling finished rows with waiting sentences);
        the same tokens from each.
    empty_answer_threshold: None for plain greedy answers; else a sentence's answer `[]` stands
        only where the model closes the list right after opening it with at least this
        probability, and the others are generated again as lists (recall for precision, for
        adapters that answer `[]` too readily; tune it on a dev split).
    max_sentence_chars: longer sentences are cut at whitespace so prompts fit the context.
    alignment_mode: `Doc.char_span` mode for names whose offsets fall inside a token.
    prompts: "trained" asks in the label lists the adapter was trained on (one prompt per list
        needed to cover `labels`); "joint" asks for all `labels` in one prompt.
    """
    return BioSelectTuneNER(
        nlp.vocab,
        name,
        labels=labels,
        base_model=base_model,
        adapter=adapter,
        device=device,
        dtype=dtype,
        decoding=decoding,
        empty_answer_threshold=empty_answer_threshold,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        max_sentence_chars=max_sentence_chars,
        alignment_mode=alignment_mode,
        prompts=prompts,
        scorer=scorer,
    )


@dataclass(frozen=True)
class SentenceAnswer:
    """The model's raw answer for `doc.text[start:end]`, asked for `labels` (empty: the component's)."""

    start: int
    end: int
    raw: str
    labels: Tuple[str, ...] = ()


def resolve_adapter(adapter: Optional[Union[str, Path]], base_model: str = DEFAULT_BASE_MODEL) -> Optional[Path]:
    """An adapter directory from a path or a name shipped under the package's `adapters/`.

    "auto" is the adapter shipped for `base_model`, or None when there is none.
    """
    if adapter is None or str(adapter) == "":
        return None
    if str(adapter) == AUTO_ADAPTER:
        shipped = SHIPPED_ADAPTERS.get(base_model)
        return None if shipped is None else resolve_adapter(shipped)
    path = Path(adapter)
    if path.is_dir():
        return path
    shipped = PACKAGE_ADAPTERS / str(adapter)
    if path.name == str(adapter) and shipped.is_dir():
        return shipped
    raise FileNotFoundError(Errors.E002.format(path=adapter))


def read_adapter_metadata(adapter_dir: Path) -> Dict:
    """The adapter's `bioselecttune.json` (written by `train`), or {} for a plain PEFT adapter."""
    metadata_path = adapter_dir / ADAPTER_METADATA
    if not metadata_path.exists():
        return {}
    try:
        return json.loads(metadata_path.read_text(encoding="utf8"))
    except ValueError as error:
        raise ValueError(Errors.E008.format(path=metadata_path, problem=f"not valid JSON ({error})")) from error


def check_adapter(adapter_dir: Path, labels: Sequence[str], base_model: Optional[str] = None) -> None:
    """Raise if the adapter's `bioselecttune.json` names another format version or registered
    base model, or lacks one of `labels`."""
    metadata = read_adapter_metadata(adapter_dir)
    if not metadata:
        return
    trained_on = metadata.get("base_model")
    if base_model in KNOWN_MODELS and trained_on in KNOWN_MODELS and base_model != trained_on:
        raise ValueError(Errors.E011.format(path=adapter_dir, trained=trained_on, base_model=base_model))
    found = metadata.get("format_version")
    if found != FORMAT_VERSION:
        raise ValueError(Errors.E004.format(path=adapter_dir, found=found, expected=FORMAT_VERSION))
    trained = list(metadata.get("labels", []))
    unknown = [label for label in labels if label not in trained]
    if unknown:
        raise ValueError(Errors.E003.format(path=adapter_dir, trained=trained, unknown=unknown))


def build_generator(
    base_model: str,
    adapter: Optional[Union[str, Path]],
    labels: Sequence[str],
    device: str,
    batch_size: int,
    max_new_tokens: int,
    dtype: str = "auto",
    decoding: str = "auto",
    empty_answer_threshold: Optional[float] = None,
) -> "Generator":
    """A generator (weights load on first use) for `base_model` plus `adapter`, once the adapter is checked.

    adapter: a directory or a name under the package's `adapters/`; its format version must
    match and its training labels must include `labels`.
    """
    from ..engine.generate import Generator

    adapter_dir = resolve_adapter(adapter, base_model)
    if adapter_dir is not None:
        check_adapter(adapter_dir, labels, base_model)
    return Generator(
        base_model=base_model,
        adapter=None if adapter_dir is None else str(adapter_dir),
        device=device,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        decoding=decoding,
        empty_answer_threshold=empty_answer_threshold,
    )


def prompt_groups(
    adapter: Optional[Union[str, Path]], base_model: str, labels: Sequence[str], mode: str
) -> List[Tuple[str, ...]]:
    """The label lists to prompt with: see `prompt_label_groups`; "joint" always asks in one prompt."""
    adapter_dir = resolve_adapter(adapter, base_model)
    trained = read_adapter_metadata(adapter_dir).get("label_sets", []) if adapter_dir is not None else []
    return prompt_label_groups(labels, trained if mode == "trained" else [])


def doc_segments(doc: Doc, max_chars: int) -> List[Tuple[int, int]]:
    """Character spans to prompt for: the doc's sentences (its own if set), cut to `max_chars`."""
    if doc.has_annotation("SENT_START"):
        sentences = [(sent.start_char, sent.end_char) for sent in doc.sents]
    else:
        sentences = split_sentences(doc.text)
    return [piece for start, end in sentences for piece in split_long(doc.text, start, end, max_chars)]


def _overlaps(span: Span, taken: Sequence[Span]) -> bool:
    return any(span.start < other.end and other.start < span.end for other in taken)


def annotate_doc(
    doc: Doc, answers: Sequence[SentenceAnswer], labels: Sequence[str], alignment_mode: str
) -> Tuple[Counter, Dict[str, str]]:
    """Add the entities the answers name to `doc.ents`; return counts and an example of each problem.

    Existing entities are kept; a new span overlapping an existing or earlier new span is skipped
    and counted as `overlapping_spans`, one that `char_span` cannot map as `unaligned_spans`.
    Names found nowhere in their sentence are counted and listed in `doc.user_data[DROPPED_NAMES_KEY]`.
    """
    counts: Counter = Counter({key: 0 for key in COUNT_KEYS})
    counts["sentences"] = len({(answer.start, answer.end) for answer in answers})
    counts["prompts"] = len(answers)
    examples: Dict[str, str] = {}
    existing = list(doc.ents)
    new_spans: List[Span] = []
    for answer in answers:
        text = doc.text[answer.start : answer.end]
        parsed = parse_answer(answer.raw, answer.labels or labels)
        if not parsed.ok:
            counts["parse_failures"] += 1
            examples.setdefault("parse_failures", answer.raw[:200])
        alignment = align_mentions(text, [m for m in parsed.mentions if m.label in labels])
        counts["dropped_names"] += len(alignment.unmatched)
        if alignment.unmatched:
            examples.setdefault("dropped_names", alignment.unmatched[0].name)
            doc.user_data.setdefault(DROPPED_NAMES_KEY, []).extend(
                {"start": answer.start, "end": answer.end, "label": m.label, "name": m.name} for m in alignment.unmatched
            )
        for entity in alignment.entities:
            start, end = answer.start + entity.start, answer.start + entity.end
            span = doc.char_span(start, end, label=entity.label, alignment_mode=alignment_mode)
            if span is None:
                counts["unaligned_spans"] += 1
                examples.setdefault("spans", f"{start}-{end} {doc.text[start:end]!r} does not map to tokens")
            elif _overlaps(span, existing) or _overlaps(span, new_spans):
                counts["overlapping_spans"] += 1
                examples.setdefault("spans", f"{span.start_char}-{span.end_char} {span.text!r} overlaps another entity")
            else:
                new_spans.append(span)
    if new_spans:
        doc.ents = sorted(existing + new_spans, key=lambda span: span.start)
    stored = doc.user_data.setdefault(USER_DATA_KEY, {})
    for key, count in counts.items():
        stored[key] = stored.get(key, 0) + count
    return counts, examples


class BioSelectTuneNER(Pipe):
    """Biomedical NER by JSON generation with a (LoRA fine-tuned) causal LLM, as in arXiv 2512.22738.

    `predict` returns raw answers per sentence and touches no doc; `set_annotations` writes
    `doc.ents` and the per-doc counts in `doc.user_data["bioselecttune"]`. `counts` holds totals
    over every doc this component has processed.
    """

    def __init__(
        self,
        vocab,
        name: str = "bioselecttune_ner",
        *,
        labels: Sequence[str] = tuple(DEFAULT_CONFIG["labels"]),
        base_model: str = DEFAULT_BASE_MODEL,
        adapter: Optional[Union[str, Path]] = None,
        device: str = "auto",
        dtype: str = "auto",
        decoding: str = "auto",
        empty_answer_threshold: Optional[float] = None,
        batch_size: int = DEFAULT_CONFIG["batch_size"],
        max_new_tokens: int = DEFAULT_CONFIG["max_new_tokens"],
        max_sentence_chars: int = DEFAULT_CONFIG["max_sentence_chars"],
        alignment_mode: str = "expand",
        prompts: str = "trained",
        scorer: Optional[Callable] = None,
    ) -> None:
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(Errors.E010.format(name="alignment_mode", value=alignment_mode, reason=f"use one of {ALIGNMENT_MODES}"))
        if dtype not in DTYPES:
            raise ValueError(Errors.E010.format(name="dtype", value=dtype, reason=f"use one of {DTYPES}"))
        if decoding not in DECODINGS:
            raise ValueError(Errors.E010.format(name="decoding", value=decoding, reason=f"use one of {DECODINGS}"))
        if empty_answer_threshold is not None:
            check_threshold(empty_answer_threshold)
        if prompts not in PROMPT_MODES:
            raise ValueError(Errors.E010.format(name="prompts", value=prompts, reason=f"use one of {PROMPT_MODES}"))
        for option, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("max_sentence_chars", max_sentence_chars)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(Errors.E010.format(name=option, value=value, reason="must be a positive integer"))
        self.vocab = vocab
        self.name = name
        self._labels = tuple(check_labels(labels))
        self.base_model = base_model
        self.adapter = None if adapter is None else str(adapter)
        self.device = device
        self.dtype = dtype
        self.decoding = decoding
        self.empty_answer_threshold = empty_answer_threshold
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_sentence_chars = max_sentence_chars
        self.alignment_mode = alignment_mode
        self.prompts = prompts
        self.scorer = scorer
        self.counts: Counter = Counter()
        self._generator: Optional["Generator"] = None
        self._groups: Optional[List[Tuple[str, ...]]] = None
        self._adapter_tempdir: Optional[tempfile.TemporaryDirectory] = None
        self._warned: set = set()

    @property
    def labels(self) -> Tuple[str, ...]:
        return self._labels

    @property
    def is_loaded(self) -> bool:
        return self._generator is not None

    @property
    def generator(self) -> "Generator":
        """The generator, built on first access after the adapter and labels are checked."""
        if self._generator is None:
            self._generator = build_generator(
                self.base_model, self.adapter, self._labels, self.device, self.batch_size, self.max_new_tokens, self.dtype, self.decoding,
                self.empty_answer_threshold,
            )
        return self._generator

    @property
    def prompt_groups(self) -> List[Tuple[str, ...]]:
        """The label lists each sentence is prompted with (one model call per list)."""
        if self._groups is None:
            self._groups = prompt_groups(self.adapter, self.base_model, self._labels, self.prompts)
        return self._groups

    def load(self) -> None:
        """Load the base model and adapter now rather than on first use."""
        self.generator.model

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *, nlp: Optional[Language] = None) -> None:
        self.load()

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Annotate docs in batches; one generator call covers every sentence of a batch."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            try:
                self.set_annotations(docs, self.predict(docs))
                yield from docs
            except Exception as error:
                error_handler(self.name, self, docs, error)

    def predict(self, docs: Iterable[Doc]) -> List[List[SentenceAnswer]]:
        """Raw model answers for every sentence of every doc and label list; empty docs cost no model call."""
        docs = list(docs)
        pieces = [(i, s, e) for i, doc in enumerate(docs) for s, e in doc_segments(doc, self.max_sentence_chars)]
        answers: List[List[SentenceAnswer]] = [[] for _ in docs]
        for group in self.prompt_groups if pieces else []:
            raws = self.generator.generate([build_prompt(docs[i].text[s:e], group) for i, s, e in pieces])
            for (i, s, e), raw in zip(pieces, raws):
                answers[i].append(SentenceAnswer(s, e, raw, group))
        return answers

    def set_annotations(self, docs: Iterable[Doc], answers: List[List[SentenceAnswer]]) -> None:
        batch_counts: Counter = Counter()
        problems: Dict[str, str] = {}
        for doc, doc_answers in zip(docs, answers):
            counts, examples = annotate_doc(doc, doc_answers, self._labels, self.alignment_mode)
            batch_counts.update(counts)
            problems = {**examples, **problems}
        self.counts.update(batch_counts)
        self._warn_once(batch_counts, problems)

    def _warn_once(self, counts: Counter, problems: Dict[str, str]) -> None:
        """Warn about each kind of loss the first time it happens; the counts are always kept."""
        new = set(problems) - self._warned
        self._warned |= new
        if "parse_failures" in new:
            reason = f"{counts['parse_failures']} of {counts['sentences']} answers in this batch"
            warn(Warnings.W001.format(reason=reason, raw=problems["parse_failures"]))
        if "dropped_names" in new:
            warn(Warnings.W002.format(count=counts["dropped_names"], example=problems["dropped_names"]))
        if "spans" in new:
            rejected = counts["overlapping_spans"] + counts["unaligned_spans"]
            warn(Warnings.W300.format(count=rejected, overlapping=counts["overlapping_spans"], unaligned=counts["unaligned_spans"], example=problems["spans"]))

    def _settings(self, adapter_dir: Optional[Path]) -> Dict:
        return {
            "labels": list(self._labels),
            "base_model": self.base_model,
            "adapter": None if adapter_dir is None else ADAPTER_DIR,
            "format_version": FORMAT_VERSION,
        }

    def _apply_settings(self, settings: Dict, source: Path, adapter_dir: Optional[Path]) -> None:
        """Take over saved settings, check their format version and load the model."""
        if settings.get("format_version") != FORMAT_VERSION:
            raise ValueError(Errors.E004.format(path=source, found=settings.get("format_version"), expected=FORMAT_VERSION))
        self._labels = tuple(check_labels(settings["labels"]))
        self.base_model = settings["base_model"]
        self.adapter = None if adapter_dir is None else str(adapter_dir)
        self._generator = None
        self._groups = None
        self.load()

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Write the settings (`cfg`) and a copy of the adapter; base weights are referenced, never saved."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        adapter_dir = resolve_adapter(self.adapter, self.base_model)
        (path / SETTINGS_FILE).write_text(json.dumps(self._settings(adapter_dir), indent=2), encoding="utf8")
        target = path / ADAPTER_DIR
        if adapter_dir is not None and adapter_dir.resolve() != target.resolve():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(adapter_dir, target)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "BioSelectTuneNER":
        """Read the settings and adapter written by `to_disk`, then load the model."""
        path = Path(path)
        settings_path = path / SETTINGS_FILE
        if not settings_path.exists():
            raise FileNotFoundError(Errors.E302.format(path=path, missing=SETTINGS_FILE))
        settings: Dict = json.loads(settings_path.read_text(encoding="utf8"))
        self._apply_settings(settings, path, None if settings["adapter"] is None else path / settings["adapter"])
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """The settings and the adapter's files, as msgpack; base weights are referenced, never included."""
        adapter_dir = resolve_adapter(self.adapter, self.base_model)
        files = {}
        if adapter_dir is not None:
            files = {p.relative_to(adapter_dir).as_posix(): p.read_bytes() for p in sorted(adapter_dir.rglob("*")) if p.is_file()}
        return srsly.msgpack_dumps({SETTINGS_FILE: self._settings(adapter_dir), ADAPTER_DIR: files})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "BioSelectTuneNER":
        """Restore from `to_bytes`; the adapter files go to a temporary directory this component owns."""
        data = srsly.msgpack_loads(bytes_data)
        adapter_dir = None
        if data[SETTINGS_FILE]["adapter"] is not None:
            self._adapter_tempdir = tempfile.TemporaryDirectory(prefix="bioselecttune-adapter-")
            adapter_dir = Path(self._adapter_tempdir.name)
            for name, content in data[ADAPTER_DIR].items():
                (adapter_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (adapter_dir / name).write_bytes(content)
        self._apply_settings(data[SETTINGS_FILE], Path(f"<bytes of {self.name}>"), adapter_dir)
        return self
