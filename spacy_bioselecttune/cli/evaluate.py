"""`evaluate`: strict entity P/R/F1 of a pipeline on a gold DocBin, with failure counts and speed."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence

import typer

from ..engine.metrics import ERROR_KINDS, entity_errors
from ..engine.plots import plot_per_label_f1
from ..engine.records import Entity
from ..errors import Errors
from . import PIPE_BATCH_SIZE, Arg, Opt, app

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

COMPONENT_OPTIONS = ("labels", "base_model", "adapter", "device", "batch_size", "prompts", "dtype", "decoding", "empty_answer_threshold")


@dataclass
class EvaluationRun:
    """What `evaluate` measured and where it wrote it."""

    metrics: Dict[str, Any]
    metrics_json: Path
    metrics_md: Path
    plot: Path
    errors_jsonl: Path


def split_labels(labels: Optional[str]) -> Optional[List[str]]:
    """`"Chemical,Disease"` -> `["Chemical", "Disease"]`; None stays None."""
    return None if labels is None else [label.strip() for label in labels.split(",") if label.strip()]


def _config_overrides(config, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Dotted config overrides that apply `settings` to every bioselecttune component in `config`."""
    overrides: Dict[str, Any] = {}
    for name, block in config["components"].items():
        if block.get("factory") == "bioselecttune_ner":
            overrides.update({f"components.{name}.{key}": value for key, value in settings.items()})
        elif block.get("factory") == "llm" and str(block.get("task", {}).get("@llm_tasks", "")).startswith("bioselecttune."):
            for key, value in settings.items():
                section = "task" if key == "labels" else "model"
                overrides[f"components.{name}.{section}.{key}"] = value
    return overrides


def load_pipeline(
    model: Optional[Path] = None,
    adapter: Optional[str] = None,
    base_model: Optional[str] = None,
    labels: Optional[List[str]] = None,
    device: Optional[str] = None,
    batch_size: Optional[int] = None,
    prompts: Optional[str] = None,
    dtype: Optional[str] = None,
    decoding: Optional[str] = None,
    empty_answer_threshold: Optional[float] = None,
) -> "Language":
    """A pipeline from a saved directory, a .cfg file, an adapter directory, or (model None) the options alone.

    Options that are None keep the pipeline's or the component's defaults. A saved pipeline
    keeps its own labels, base model and adapter; only `device` and `batch_size` apply to it.
    """
    import spacy
    from spacy.util import load_config, load_model_from_config

    settings = {key: value for key, value in zip(COMPONENT_OPTIONS, (labels, base_model, adapter, device, batch_size, prompts, dtype, decoding, empty_answer_threshold)) if value is not None}
    if model is not None and (model / "config.cfg").is_file():
        fixed = sorted(set(settings) & {"labels", "base_model", "adapter"})
        if fixed:
            raise ValueError(Errors.E010.format(name=fixed[0], value=settings[fixed[0]], reason=f"the saved pipeline {model} keeps its own; build from a .cfg file or an adapter directory instead"))
        return spacy.load(model, config=_config_overrides(load_config(model / "config.cfg"), settings))
    if model is not None and model.is_file() and model.suffix == ".cfg":
        config = load_config(model)
        return load_model_from_config(load_config(model, overrides=_config_overrides(config, settings)), auto_fill=True)
    if model is not None and (model / "adapter_config.json").is_file():
        settings.setdefault("adapter", str(model))
    elif model is not None:
        raise ValueError(Errors.E303.format(path=model))
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config=settings)
    return nlp


SENTENCE_UNITS = {"gold": "the gold docs' own", "pipeline": "split by the pipeline"}


def metrics_table(metrics: Dict[str, Any]) -> str:
    """A Markdown table of P/R/F1 per label and overall, followed by the counts."""
    rows = ["| Label | Precision | Recall | F1 |", "|---|---:|---:|---:|"]
    for label, prf in sorted((metrics.get("ents_per_type") or {}).items()):
        rows.append(f"| {label} | {prf['p']:.4f} | {prf['r']:.4f} | {prf['f']:.4f} |")
    overall = [metrics.get(key) or 0.0 for key in ("ents_p", "ents_r", "ents_f")]
    rows.append("| **overall** | {:.4f} | {:.4f} | {:.4f} |".format(*overall))
    counts = [
        ("Documents", metrics["docs"]),
        ("Sentences", f"{metrics['sentences']} ({SENTENCE_UNITS[metrics['sentence_units']]})"),
        ("Prompts (sentences x label lists)", metrics["prompts"]),
        ("Unparsable answers", metrics["parse_failures"]),
        ("Dropped names (not in the text)", metrics["dropped_names"]),
        ("Spans overlapping other entities", metrics["overlapping_spans"]),
        ("Spans not mapping to tokens", metrics["unaligned_spans"]),
        ("Documents per second", f"{metrics['docs_per_second']:.2f}"),
        ("Words per second", f"{metrics['words_per_second']:.0f}"),
    ]
    if metrics["sentences"]:
        counts.append(("Sentences per second", f"{metrics['sentences_per_second']:.2f}"))
    if metrics.get("warm_up_seconds") is not None:
        counts.append(("Warm-up before the clock: docs (s)", f"{metrics['warm_up_docs']} ({metrics['warm_up_seconds']:.1f})"))
    phases = metrics.get("generation")
    if phases:
        if phases.get("decoding"):
            counts.append(("Decoding loop", phases["decoding"]))
        counts.append(("Model time: tokenize / prefill / decode (s)",
                       " / ".join(f"{phases[key]:.2f}" for key in ("tokenize_seconds", "prefill_seconds", "decode_seconds"))))
        counts.append(("Decode steps (ms per step)", f"{phases['decode_steps']} ({phases['ms_per_decode_step']:.1f})"))
        if phases.get("drafted_tokens"):
            counts.append(("Draft tokens kept / fed", f"{phases['accepted_tokens']} / {phases['drafted_tokens']}"))
        counts.append(("Answers stopped as loops (last items only repeats)", phases.get("looping_answers", 0)))
        if phases.get("reopened_answers") or phases.get("gate_seconds"):
            counts.append(("Answers [] below the empty-answer threshold, generated again (s scoring them)",
                           f"{phases['reopened_answers']} ({phases['gate_seconds']:.2f})"))
    rows += ["", "| Count | Value |", "|---|---:|"] + [f"| {name} | {value} |" for name, value in counts]
    errors = metrics.get("errors")
    if errors:
        rows += ["", "| Error kind | False negatives | False positives |", "|---|---:|---:|"]
        for kind in ERROR_KINDS:
            rows.append(f"| {kind.replace('_', ' ')} | {errors['false_negative'].get(kind, '')} | {errors['false_positive'].get(kind, '')} |")
    return "\n".join(rows) + "\n"


def _entities(doc: "Doc") -> List[Entity]:
    """A doc's entities as character-offset Entities."""
    return [Entity(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def write_errors(gold_docs: Sequence["Doc"], predicted: Sequence["Doc"], path: Path) -> Dict[str, Dict[str, int]]:
    """Write one JSON line per doc with errors or dropped names; return the error counts by kind.

    A line holds the doc's index and text, its false negatives and positives (each with its
    kind) and the names the model gave that occur nowhere in their sentence.
    """
    from ..pipeline.scorer import DROPPED_NAMES_KEY

    counts = {"false_negative": {kind: 0 for kind in ERROR_KINDS if kind != "spurious"},
              "false_positive": {kind: 0 for kind in ERROR_KINDS if kind != "missed"}}
    with path.open("w", encoding="utf8") as out:
        for index, (gold, prediction) in enumerate(zip(gold_docs, predicted)):
            errors = entity_errors(_entities(gold), _entities(prediction))
            dropped = prediction.user_data.get(DROPPED_NAMES_KEY, [])
            if not errors and not dropped:
                continue
            line: Dict[str, Any] = {"doc": index, "text": gold.text, "false_negatives": [], "false_positives": [], "dropped_names": dropped}
            for error in errors:
                counts[error.side][error.kind] += 1
                e = error.entity
                line[error.side + "s"].append({"start": e.start, "end": e.end, "label": e.label, "text": gold.text[e.start:e.end], "kind": error.kind})
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return counts


def _generation_phases(nlp: "Language") -> Optional[Dict[str, Any]]:
    """Where the model's time went (summed over the pipes with a loaded generator) and their decoding loop, or None."""
    from ..engine.generate import DecodeTimes

    generators = [pipe.generator for _, pipe in nlp.pipeline if getattr(pipe, "is_loaded", False)]
    if not generators:
        return None
    phases: Dict[str, Any] = DecodeTimes.summed([generator.times for generator in generators]).to_dict()
    phases["decoding"] = ", ".join(dict.fromkeys(generator.resolved_decoding for generator in generators))
    return phases


def _warm_up(nlp: "Language", docs: Iterable["Doc"], batch_size: int) -> float:
    """Annotate `docs` and forget the generators' times; return the seconds taken."""
    from ..engine.generate import DecodeTimes

    started = time.perf_counter()
    for _ in nlp.pipe(docs, batch_size=batch_size):
        pass
    for _, pipe in nlp.pipeline:
        if getattr(pipe, "is_loaded", False):
            pipe.generator.times = DecodeTimes()
    return time.perf_counter() - started


def _sets_entities(nlp: "Language", name: str) -> bool:
    """Whether the pipe declares that it assigns `doc.ents` (spacy-llm's `llm` declares nothing)."""
    meta = nlp.get_pipe_meta(name)
    return "doc.ents" in meta.assigns or meta.factory == "llm"


def evaluate(
    nlp: "Language",
    gold_path: Path,
    output_dir: Path,
    limit: Optional[int] = None,
    batch_size: int = PIPE_BATCH_SIZE,
    show_progress: bool = False,
    warm_up: int = 0,
    gold_sentences: bool = True,
) -> EvaluationRun:
    """Run `nlp` on fresh copies of the gold docs' words and score its entities against the gold.

    Writes `metrics.json`, `metrics.md`, `per_label_f1.png` and `errors.jsonl` to `output_dir`.
    The rates count annotation alone: pipes with a `load` method load their weights first, and
    with `warm_up` the `warm_up` longest docs are annotated once before the clock starts (this
    builds, compiles and captures static decoders); its seconds are reported apart.
    gold_sentences: the copies keep the gold docs' sentence starts where they have them (the
        corpus's own sentences, as the converted corpora hold), so those are what is prompted;
        False leaves the sentences to the pipeline. `metrics["sentence_units"]` says which.
    """
    from spacy.scorer import Scorer
    from spacy.tokens import Doc, DocBin
    from spacy.training import Example
    from tqdm.auto import tqdm

    from ..pipeline.scorer import doc_counts

    if not any(_sets_entities(nlp, name) for name in nlp.pipe_names):
        raise ValueError(Errors.E304.format(names=nlp.pipe_names))
    gold_docs = list(DocBin().from_disk(gold_path).get_docs(nlp.vocab))[: limit or None]

    keep_sentences = gold_sentences and any(doc.has_annotation("SENT_START") for doc in gold_docs)

    def fresh(docs: Sequence["Doc"]) -> Iterator["Doc"]:
        for doc in docs:
            starts = [bool(t.is_sent_start) for t in doc] if keep_sentences and doc.has_annotation("SENT_START") else None
            yield Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc], sent_starts=starts)

    for _, pipe in nlp.pipeline:
        if callable(getattr(pipe, "load", None)):
            pipe.load()
    warm_up_seconds = _warm_up(nlp, fresh(sorted(gold_docs, key=len, reverse=True)[:warm_up]), batch_size) if warm_up else None
    start = time.perf_counter()
    predicted = list(tqdm(nlp.pipe(fresh(gold_docs), batch_size=batch_size), total=len(gold_docs), unit="doc", desc="Evaluating", disable=not show_progress))
    seconds = time.perf_counter() - start
    examples = [Example(prediction, gold) for prediction, gold in zip(predicted, gold_docs)]
    scores = Scorer(nlp).score(examples)
    metrics: Dict[str, Any] = {key: scores.get(key) for key in ("ents_p", "ents_r", "ents_f", "ents_per_type")}
    metrics.update(doc_counts(examples))
    metrics.update(
        docs=len(gold_docs),
        gold_entities=sum(len(doc.ents) for doc in gold_docs),
        predicted_entities=sum(len(doc.ents) for doc in predicted),
        words=sum(len(doc) for doc in gold_docs),
        seconds=seconds,
        warm_up_docs=min(warm_up, len(gold_docs)),
        sentence_units="gold" if keep_sentences else "pipeline",
        warm_up_seconds=warm_up_seconds,
    )
    phases = _generation_phases(nlp)
    if phases:
        metrics["generation"] = phases
    for unit in ("docs", "words", "sentences"):
        metrics[f"{unit}_per_second"] = metrics[unit] / seconds if seconds > 0 else 0.0
    output_dir.mkdir(parents=True, exist_ok=True)
    errors_jsonl = output_dir / "errors.jsonl"
    metrics["errors"] = write_errors(gold_docs, predicted, errors_jsonl)
    metrics_json = output_dir / "metrics.json"
    metrics_json.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf8")
    metrics_md = output_dir / "metrics.md"
    metrics_md.write_text(f"# Evaluation on {gold_path.name}\n\n" + metrics_table(metrics), encoding="utf8")
    plot = plot_per_label_f1(metrics, output_dir / "per_label_f1.png")
    return EvaluationRun(metrics, metrics_json, metrics_md, plot, errors_jsonl)


@app.command("evaluate")
def evaluate_cli(
    model: Path = Arg(..., help="Saved pipeline directory, pipeline .cfg file, or LoRA adapter directory", exists=True),
    gold_path: Path = Arg(..., help="Gold DocBin (.spacy)", exists=True, dir_okay=False),
    output_dir: Path = Opt(..., "--output", "-o", help="Directory for metrics.json, metrics.md, per_label_f1.png and errors.jsonl"),
    adapter: Optional[str] = Opt(None, "--adapter", "-a", help="LoRA adapter directory or shipped adapter name (.cfg or adapter builds only)"),
    base_model: Optional[str] = Opt(None, "--base-model", "-m", help="Registered base model name, checkpoint directory or .gguf"),
    labels: Optional[str] = Opt(None, "--labels", "-l", help="Comma-separated entity labels, e.g. Chemical,Disease"),
    device: Optional[str] = Opt(None, "--device", "-d", help="auto, cpu, cuda or cuda:N"),
    batch_size: int = Opt(PIPE_BATCH_SIZE, "--batch-size", "-b", help="Docs per nlp.pipe batch (their sentences are sorted by length together)"),
    model_batch_size: Optional[int] = Opt(None, "--model-batch-size", help="Sentences per model batch (the component's batch_size; e.g. 512 on a GPU)"),
    limit: Optional[int] = Opt(None, "--limit", "-n", help="Evaluate only the first N docs (0 or unset: all)"),
    prompts: Optional[str] = Opt(None, "--prompts", help="trained (the adapter's label lists) or joint (all labels in one prompt)"),
    dtype: Optional[str] = Opt(None, "--dtype", help="Weights' dtype: auto (bf16 on CUDA, fp32 on CPU), float32 or bfloat16"),
    decoding: Optional[str] = Opt(None, "--decoding", help="auto (default: static-continuous on CUDA, continuous elsewhere), dynamic, continuous, static, compiled, static-continuous or compiled-continuous"),
    empty_answer_threshold: Optional[float] = Opt(None, "--empty-answer-threshold", help="Keep an answer [] only where the model gives it at least this probability; generate the others again as lists (default: plain greedy answers)"),
    warm_up: int = Opt(0, "--warm-up", help="Annotate the N longest docs once before the clock starts (e.g. the model batch size, for compiled decoding)"),
    gold_sentences: bool = Opt(True, "--gold-sentences/--own-sentences", help="Prompt the gold docs' sentences where the DocBin marks them (converted corpora do), or let the pipeline split the text itself"),
) -> None:
    """Strict entity P/R/F1 overall and per label, parse failures, dropped names and speed."""
    nlp = load_pipeline(model, adapter=adapter, base_model=base_model, labels=split_labels(labels), device=device,
                        batch_size=model_batch_size, prompts=prompts, dtype=dtype, decoding=decoding,
                        empty_answer_threshold=empty_answer_threshold)
    run = evaluate(nlp, gold_path, output_dir, limit=limit, batch_size=batch_size, show_progress=True, warm_up=warm_up,
                   gold_sentences=gold_sentences)
    typer.echo(run.metrics_md.read_text(encoding="utf8"))
    typer.echo(f"Wrote {run.metrics_json}, {run.metrics_md}, {run.plot} and {run.errors_jsonl}")
