"""`score`: IFD scores of every instruction example under a weak model, written as JSONL."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..engine.ifd import ScoringRun, read_instruction_jsonl, score_examples
from ..engine.loading import DEFAULT_BASE_MODEL
from . import Arg, Opt, app
from .curate import config_settings


SCORE_DEFAULTS = {"model": DEFAULT_BASE_MODEL, "batch_size": 16}


@app.command("score")
def score_cli(
    input_path: Path = Arg(..., help="Instruction JSONL (id, prompt, answer, positive)", exists=True, dir_okay=False),
    output_path: Path = Arg(..., help="Scores JSONL to write; an existing file is resumed", dir_okay=False),
    model: Optional[str] = Opt(None, "--model", "-m", help=f"Weak model: registered name, directory or .gguf (default: {DEFAULT_BASE_MODEL})"),
    batch_size: Optional[int] = Opt(None, "--batch-size", "-b", help="Examples per forward pass (default: 16)"),
    device: str = Opt("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N"),
    max_batches: Optional[int] = Opt(None, "--max-batches", help="Stop after this many batches (resume later)"),
    config_path: Optional[Path] = Opt(None, "--config", "-c", help="Settings file with a score section", exists=True, dir_okay=False),
) -> None:
    """Score each example's Instruction-Following Difficulty (loss given the prompt / loss alone).

    Options given here win over the config file, which wins over the defaults.
    """
    settings = config_settings(config_path, "score", {"model": model, "batch_size": batch_size}, SCORE_DEFAULTS)
    run = score(input_path, output_path, device=device, max_batches=max_batches, show_progress=True, **settings)
    typer.echo(
        f"Scored {run.scored} example(s) ({run.examples_per_second:.2f} examples/s); "
        f"{run.already_scored} were already in {output_path}; "
        f"{run.total - run.already_scored - run.scored} left."
    )


def score(
    input_path: Path,
    output_path: Path,
    model: str = DEFAULT_BASE_MODEL,
    batch_size: int = 16,
    device: str = "auto",
    max_batches: Optional[int] = None,
    show_progress: bool = False,
) -> ScoringRun:
    """Score `input_path` into `output_path`, skipping ids that file already holds."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    examples = read_instruction_jsonl(input_path)
    return score_examples(examples, output_path, model, batch_size, device, max_batches, show_progress)
