"""`mix`: one training set from several corpora's instruction JSONL, each example keeping its prompt."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from ..engine.mixing import mix_instruction_files
from . import Arg, Opt, app


@app.command("mix")
def mix_cli(
    output_path: Path = Arg(..., help="Instruction JSONL to write", dir_okay=False),
    input_paths: List[Path] = Arg(..., help="Instruction JSONL files (e.g. each corpus's train split)", exists=True, dir_okay=False),
    limit: int = Opt(0, "--limit", "-n", help="At most this many examples from each input, a seeded sample (0: all)"),
    seed: int = Opt(0, "--seed", help="Seed for sampling and shuffling"),
) -> None:
    """Sample from each input, shuffle together and write OUTPUT_PATH plus a `.report.json` beside it."""
    examples, sources = mix_instruction_files(input_paths, limit=limit, seed=seed)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf8") as file:
        for example in examples:
            file.write(example.line + "\n")
    report = {"output": str(output_path), "examples": len(examples), "limit": limit, "seed": seed, "sources": [vars(s) for s in sources]}
    output_path.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf8")
    for source in sources:
        typer.echo(f"{source.path}: {source.taken} of {source.available} ({source.positives} positive), labels {', '.join(source.labels)}")
    typer.echo(f"Wrote {len(examples)} examples -> {output_path}")
