"""`annotate`: run the pipeline over texts and write displaCy HTML (and optionally entity JSONL)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional

import typer

from ..errors import Errors
from . import PIPE_BATCH_SIZE, Arg, Opt, app
from .evaluate import load_pipeline, split_labels

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc


def read_texts(path: Path, limit: Optional[int] = None) -> List[str]:
    """Texts from a .txt file (one per non-blank line) or a .jsonl file (a `text` string per line)."""
    if path.suffix not in (".txt", ".jsonl"):
        raise ValueError(Errors.E305.format(path=path))
    texts: List[str] = []
    with path.open(encoding="utf8") as lines:
        for number, line in enumerate(lines, start=1):
            if limit is not None and len(texts) >= limit:
                break
            if not line.strip():
                continue
            if path.suffix == ".txt":
                texts.append(line.rstrip("\r\n"))
                continue
            try:
                item = json.loads(line)
            except ValueError as error:
                raise ValueError(Errors.E007.format(path=path, line=number, problem=f"invalid JSON ({error})")) from error
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError(Errors.E007.format(path=path, line=number, problem="expected an object with a 'text' string"))
            texts.append(item["text"])
    return texts


def entity_records(docs: Iterable["Doc"]) -> Iterable[dict]:
    """One JSON-ready record per doc: its text and entities with character offsets."""
    for doc in docs:
        yield {
            "text": doc.text,
            "entities": [{"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text} for e in doc.ents],
        }


def annotate(
    nlp: "Language",
    texts: List[str],
    output_html: Path,
    output_jsonl: Optional[Path] = None,
    batch_size: int = PIPE_BATCH_SIZE,
    show_progress: bool = False,
) -> List["Doc"]:
    """Annotate `texts`, write a displaCy entity page to `output_html` and, if given, entity JSONL."""
    from spacy import displacy
    from tqdm.auto import tqdm

    docs = list(tqdm(nlp.pipe(texts, batch_size=batch_size), total=len(texts), unit="doc", desc="Annotating", disable=not show_progress))
    output_html.parent.mkdir(parents=True, exist_ok=True)
    output_html.write_text(displacy.render(docs, style="ent", page=True), encoding="utf8")
    if output_jsonl is not None:
        output_jsonl.parent.mkdir(parents=True, exist_ok=True)
        with output_jsonl.open("w", encoding="utf8") as out:
            for record in entity_records(docs):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return docs


@app.command("annotate")
def annotate_cli(
    input_path: Path = Arg(..., help="Texts: .txt (one per line) or .jsonl (objects with a 'text' string)", exists=True, dir_okay=False),
    output_html: Path = Arg(..., help="displaCy HTML page to write", dir_okay=False),
    model: Optional[Path] = Opt(None, "--model", help="Saved pipeline directory, pipeline .cfg file or adapter directory", exists=True),
    adapter: Optional[str] = Opt(None, "--adapter", "-a", help="LoRA adapter directory or shipped adapter name"),
    base_model: Optional[str] = Opt(None, "--base-model", "-m", help="Registered base model name, checkpoint directory or .gguf"),
    labels: Optional[str] = Opt(None, "--labels", "-l", help="Comma-separated entity labels, e.g. Chemical,Disease"),
    device: Optional[str] = Opt(None, "--device", "-d", help="auto, cpu, cuda or cuda:N"),
    batch_size: int = Opt(PIPE_BATCH_SIZE, "--batch-size", "-b", help="Docs per nlp.pipe batch"),
    limit: Optional[int] = Opt(None, "--limit", "-n", help="Annotate only the first N texts"),
    output_jsonl: Optional[Path] = Opt(None, "--jsonl", help="Also write the entities as JSONL here", dir_okay=False),
) -> None:
    """Annotate texts with the bioselecttune_ner pipeline and render the entities with displaCy."""
    nlp = load_pipeline(model, adapter=adapter, base_model=base_model, labels=split_labels(labels), device=device)
    docs = annotate(nlp, read_texts(input_path, limit), output_html, output_jsonl, batch_size=batch_size, show_progress=True)
    typer.echo(f"Annotated {len(docs)} text(s) with {sum(len(doc.ents) for doc in docs)} entities: {output_html}")
