"""`assemble`: save a loadable pipeline (settings plus adapter, no base weights) for an adapter."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import Arg, Opt, app
from .evaluate import load_pipeline, split_labels


def assemble(adapter: Path, output_dir: Path, labels: Optional[str] = None, base_model: Optional[str] = None) -> Path:
    """Write `spacy.blank("en")` + `bioselecttune_ner` with this adapter to `output_dir`."""
    nlp = load_pipeline(adapter, base_model=base_model, labels=split_labels(labels))
    nlp.to_disk(output_dir)
    return output_dir


@app.command("assemble")
def assemble_cli(
    adapter: Path = Arg(..., help="LoRA adapter directory written by `train`", exists=True, file_okay=False),
    output_dir: Path = Arg(..., help="Pipeline directory to write (spacy.load reads it)", file_okay=False),
    labels: Optional[str] = Opt(None, "--labels", "-l", help="Comma-separated entity labels, e.g. Chemical,Disease"),
    base_model: Optional[str] = Opt(None, "--base-model", "-m", help="Registered base model name, checkpoint directory or .gguf"),
) -> None:
    """Save a pipeline directory for an adapter; `spacy package` turns it into an installable package."""
    typer.echo(f"Saved pipeline to {assemble(adapter, output_dir, labels, base_model)}")
