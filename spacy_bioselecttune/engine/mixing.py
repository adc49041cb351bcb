"""Mixing instruction JSONL files from several corpora into one training set.

Each example keeps its own prompt, so a sentence from a Disease-only corpus is never asked
for genes it was not annotated for.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from ..errors import Errors
from .ifd import InstructionExample, read_instruction_jsonl

PathLike = Union[str, Path]


@dataclass(frozen=True)
class SourceCounts:
    """What one input file contributed."""

    path: str
    available: int
    taken: int
    positives: int
    labels: Tuple[str, ...]


def mix_instruction_files(
    paths: Sequence[PathLike], limit: Union[int, Sequence[int]] = 0, seed: int = 0
) -> Tuple[List[InstructionExample], List[SourceCounts]]:
    """Up to `limit` examples from each file (a seeded sample; 0 takes all), shuffled together.

    `limit` is one number for every file or one per file. Raises if an id appears in two
    files, naming both.
    """
    limits = [limit] * len(paths) if isinstance(limit, int) else list(limit)
    if len(limits) != len(paths) or any(value < 0 for value in limits):
        allowed = f"0 (all) or a positive integer, once or once for each of the {len(paths)} inputs"
        raise ValueError(Errors.E405.format(name="limit", value=limit, allowed=allowed))
    rng = random.Random(seed)
    mixed: List[InstructionExample] = []
    sources: List[SourceCounts] = []
    origin: Dict[str, str] = {}
    for path, source_limit in zip(paths, limits):
        examples = read_instruction_jsonl(path)
        for number, example in enumerate(examples, start=1):
            if example.id in origin:
                raise ValueError(Errors.E410.format(path=path, number=number, id=example.id, first=origin[example.id]))
            origin[example.id] = str(path)
        if source_limit and source_limit < len(examples):
            taken = [examples[i] for i in sorted(rng.sample(range(len(examples)), source_limit))]
        else:
            taken = examples
        labels = tuple(dict.fromkeys(label for example in taken for label in example.labels))
        positives = sum(example.positive for example in taken)
        sources.append(SourceCounts(str(path), len(examples), len(taken), positives, labels))
        mixed.extend(taken)
    rng.shuffle(mixed)
    return mixed, sources
