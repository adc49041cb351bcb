"""`convert` and `convert-dataset`: corpus files to .spacy DocBins, instruction JSONL and a report."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

import typer
from tqdm import tqdm

from ..engine.answer_format import answer_for_record, build_prompt, check_labels
from ..engine.corpora import (
    FORMATS,
    LEVELS,
    ConversionReport,
    Document,
    document_records,
    get_dataset,
    parse_label_map,
    read_documents,
    warn_exclusions,
)
from ..engine.records import Record
from ..errors import Errors
from . import Arg, Opt, app


@dataclass(frozen=True)
class ConvertedSplit:
    """Where one converted split was written, and its report."""

    docbin: Path
    jsonl: Path
    report_path: Path
    report: ConversionReport


def instruction_line(record: Record, labels: Sequence[str]) -> str:
    """One instruction JSONL line: id, text, prompt, answer, entities, positive, labels."""
    item = {
        "id": record.id,
        "text": record.text,
        "prompt": build_prompt(record.text, labels),
        "answer": answer_for_record(record),
        "entities": [[ent.start, ent.end, ent.label] for ent in record.entities],
        "positive": record.is_positive,
        "labels": list(labels),
    }
    return json.dumps(item, ensure_ascii=False)


def split_labels(labels: str) -> Optional[List[str]]:
    """`"Chemical,Disease"` -> `["Chemical", "Disease"]`; an empty string -> None (keep all)."""
    names = [name.strip() for name in labels.split(",") if name.strip()]
    return check_labels(names) if names else None


def convert(
    format: str,
    input_path: Path,
    output_dir: Path,
    name: str,
    split: str,
    labels: Optional[Sequence[str]] = None,
    label_map: Optional[Dict[str, str]] = None,
    level: str = "sentence",
    limit: int = 0,
    show_progress: bool = False,
) -> ConvertedSplit:
    """Convert one corpus file into `<name>-<split>.spacy`, `.jsonl` and `.report.json` in `output_dir`.

    labels: entity types to keep and to name in the prompt (default: every type found, sorted).
    label_map: source type -> label, on top of the defaults (NCBI subtypes -> Disease, GENE -> Gene).
    limit: convert at most this many documents (0: all).
    """
    if format not in FORMATS:
        raise ValueError(Errors.E210.format(name=format, known=", ".join(FORMATS)))
    if level not in LEVELS:
        raise ValueError(Errors.E213.format(level=level))
    started = time.perf_counter()
    report = ConversionReport(level=level)
    documents = list(
        read_documents(format, input_path, report, labels, label_map or {}, id_prefix=f"{name}/{split}/", limit=limit)
    )
    import spacy  # here, so that the engine-only commands run where spaCy is not installed

    from ..pipeline.docs import DocConversion, new_docbin, record_to_doc

    nlp = spacy.blank("en")
    doc_conversion = DocConversion()
    docbin = new_docbin()
    records: List[Record] = []
    progress = tqdm(documents, total=len(documents), unit="doc", desc=f"{name}-{split}", disable=not show_progress)
    for document in progress:
        for record in document_records(document, level):
            report.add_record(record)
            records.append(record)
            docbin.add(record_to_doc(nlp, record, doc_conversion, record_sentences(document, record, level)))
    prompt_labels = list(labels) if labels else sorted(report.mentions)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{split}"
    docbin_path = output_dir / f"{stem}.spacy"
    jsonl_path = output_dir / f"{stem}.jsonl"
    report_path = output_dir / f"{stem}.report.json"
    docbin.to_disk(docbin_path)
    with jsonl_path.open("w", encoding="utf8") as file:
        for record in records:
            file.write(instruction_line(record, prompt_labels) + "\n")
    report.seconds = time.perf_counter() - started
    summary = {
        "name": name,
        "split": split,
        "labels": prompt_labels,
        **report.to_dict(),
        "docs": doc_conversion.to_dict(),
        "outputs": {"spacy": str(docbin_path), "jsonl": str(jsonl_path)},
    }
    report_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    warn_exclusions(report)
    return ConvertedSplit(docbin_path, jsonl_path, report_path, report)


def record_sentences(document: Document, record: Record, level: str) -> Optional[Sequence[Tuple[int, int]]]:
    """A record's sentences, for its Doc: itself at sentence level; at document level, the source's, if it gives them."""
    return [(0, len(record.text))] if level == "sentence" else document.sentences


def convert_dataset(
    dataset: str,
    corpus_root: Path,
    output_dir: Path,
    labels: Optional[Sequence[str]] = None,
    level: str = "sentence",
    train_limit: int = 0,
    eval_limit: int = 0,
    show_progress: bool = False,
) -> List[ConvertedSplit]:
    """Convert every split of a named dataset (ncbi-disease, bc5cdr, bc2gm, jnlpba) under `corpus_root`."""
    spec = get_dataset(dataset)
    labels = list(labels) if labels else list(spec.labels)
    converted = []
    for split, relative in spec.splits:
        limit = train_limit if split == "train" else eval_limit
        path = corpus_root / relative
        converted.append(convert(spec.format, path, output_dir, spec.name, split, labels, None, level, limit, show_progress))
    return converted


def _fail(err: Exception) -> NoReturn:
    typer.echo(str(err), err=True)
    raise typer.Exit(code=1)


def _print_report(converted: ConvertedSplit) -> None:
    typer.echo(converted.report.table())
    typer.echo(f"  -> {converted.docbin}, {converted.jsonl}, {converted.report_path}")


@app.command("convert")
def convert_cli(
    # fmt: off
    format: str = Arg(..., help=f"Input format: {', '.join(FORMATS)}"),
    input_path: Path = Arg(..., help="Corpus file (for bc2gm: the .in file, GENE.eval beside it)", exists=True),
    output_dir: Path = Arg(..., help="Directory for <name>-<split>.spacy, .jsonl and .report.json", file_okay=False),
    name: str = Opt(..., "--name", "-n", help="Corpus name, used in file names and record ids"),
    split: str = Opt(..., "--split", "-s", help="Split name (train, dev, test)"),
    labels: str = Opt("", "--labels", "-l", help="Comma-separated labels to keep and prompt for (default: all found)"),
    label_map: List[str] = Opt([], "--label-map", "-m", help="NAME=LABEL (repeatable), on top of the default map"),
    level: str = Opt("sentence", "--level", help="sentence or document records"),
    limit: int = Opt(0, "--limit", help="Convert at most this many documents (0: all)"),
    # fmt: on
) -> None:
    """Convert a PubTator, BioC XML, IOB2 TSV or BC2GM file to .spacy, instruction JSONL and a report."""
    try:
        mapping = parse_label_map(label_map)
        converted = convert(format, input_path, output_dir, name, split, split_labels(labels), mapping, level, limit, True)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    _print_report(converted)


@app.command("convert-dataset")
def convert_dataset_cli(
    # fmt: off
    dataset: str = Arg(..., help="ncbi-disease, bc5cdr, bc2gm or jnlpba"),
    corpus_root: Path = Arg(..., help="Directory holding the corpora", exists=True, file_okay=False),
    output_dir: Path = Arg(..., help="Directory for <dataset>-<split>.spacy, .jsonl and .report.json", file_okay=False),
    labels: str = Opt("", "--labels", "-l", help="Comma-separated labels to keep and prompt for (default: all)"),
    level: str = Opt("sentence", "--level", help="sentence or document records"),
    train_limit: int = Opt(0, "--train-limit", help="Convert at most this many train documents (0: all)"),
    eval_limit: int = Opt(0, "--eval-limit", help="Convert at most this many dev/test documents (0: all)"),
    # fmt: on
) -> None:
    """Convert the train, dev and test splits of a benchmark dataset."""
    try:
        names = split_labels(labels)
        splits = convert_dataset(dataset, corpus_root, output_dir, names, level, train_limit, eval_limit, True)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    for converted in splits:
        _print_report(converted)
