"""`mix`: one training set from several corpora's instruction JSONL, each example keeping its prompt."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Union

import typer

from ..engine.mixing import mix_instruction_files
from . import Arg, Opt, app


def parse_limits(value: str) -> Union[int, List[int]]:
    """`"4000"` -> 4000; `"0,2000,2000"` -> [0, 2000, 2000]."""
    try:
        numbers = [int(part) for part in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number or a comma-separated list of numbers", param_hint="--limit") from None
    return numbers[0] if len(numbers) == 1 else numbers


@app.command("mix")
def mix_cli(
    output_path: Path = Arg(..., help="Instruction JSONL to write", dir_okay=False),
    input_paths: List[Path] = Arg(..., help="Instruction JSONL files (e.g. each corpus's train split)", exists=True, dir_okay=False),
    limit: str = Opt("0", "--limit", "-n", help="At most this many examples from each input, a seeded sample (0: all); or one number per input, e.g. 0,2000,2000"),
    seed: int = Opt(0, "--seed", help="Seed for sampling and shuffling"),
) -> None:
    """Sample from each input, shuffle together and write OUTPUT_PATH plus a `.report.json` beside it."""
    limits = parse_limits(limit)
    examples, sources = mix_instruction_files(input_paths, limit=limits, seed=seed)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf8") as file:
        for example in examples:
            file.write(example.line + "\n")
    report = {"output": str(output_path), "examples": len(examples), "limit": limits, "seed": seed, "sources": [vars(s) for s in sources]}
    output_path.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf8")
    for source in sources:
        typer.echo(f"{source.path}: {source.taken} of {source.available} ({source.positives} positive), labels {', '.join(source.labels)}")
    typer.echo(f"Wrote {len(examples)} examples -> {output_path}")
