"""Plain data types shared by every layer: gold or predicted spans on a text."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple


@dataclass(frozen=True, order=True)
class Entity:
    """A labelled character span `text[start:end]`."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Mention:
    """An entity as the model names it: a label and a surface string, no offsets."""

    label: str
    name: str


@dataclass(frozen=True)
class Record:
    """One text (a sentence or a document) with its gold entities."""

    id: str
    text: str
    entities: Tuple[Entity, ...] = field(default_factory=tuple)

    @property
    def is_positive(self) -> bool:
        return bool(self.entities)

    def mentions(self) -> Tuple[Mention, ...]:
        """Distinct (label, name) pairs in order of first appearance."""
        seen: dict = {}
        for ent in sorted(self.entities):
            mention = Mention(ent.label, self.text[ent.start : ent.end])
            seen.setdefault(mention, None)
        return tuple(seen)
