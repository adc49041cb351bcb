"""The spaCy reader `bioselecttune.Corpus.v1`: corpus files to training Examples.

A training config can read the source corpora directly (PubTator, BioC XML, IOB2 TSV,
BC2GM originals) or the `.spacy` files that `convert` writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import spacy
from spacy.language import Language
from spacy.tokens import DocBin
from spacy.training import Example

from ..engine.corpora import FORMATS, ConversionReport, read_records
from ..errors import Errors
from .docs import record_to_doc

READER_FORMATS = ("spacy", *FORMATS)


@dataclass
class BioCorpus:
    """Iterate a corpus file as Examples whose reference Docs hold the gold entities."""

    path: Path
    format: str = "spacy"
    labels: Optional[List[str]] = None
    label_map: Dict[str, str] = field(default_factory=dict)
    level: str = "sentence"
    limit: int = 0

    def __post_init__(self) -> None:
        if self.format not in READER_FORMATS:
            raise ValueError(Errors.E210.format(name=self.format, known=", ".join(READER_FORMATS)))
        self.path = Path(self.path)
        if not self.path.exists():
            raise FileNotFoundError(Errors.E214.format(path=self.path))

    def __call__(self, nlp: Language) -> Iterator[Example]:
        for reference in self._reference_docs(nlp):
            yield Example(nlp.make_doc(reference.text), reference)

    def _reference_docs(self, nlp: Language):
        if self.format == "spacy":
            docs = DocBin().from_disk(self.path).get_docs(nlp.vocab)
            for index, doc in enumerate(docs):
                if self.limit and index >= self.limit:
                    break
                yield doc
            return
        records = read_records(
            self.format, self.path, ConversionReport(), self.labels, self.label_map, self.level, limit=self.limit
        )
        for record in records:
            yield record_to_doc(nlp, record)


@spacy.registry.readers("bioselecttune.Corpus.v1")
def create_corpus_reader(
    path: Path,
    format: str = "spacy",
    labels: Optional[List[str]] = None,
    label_map: Dict[str, str] = {},
    level: str = "sentence",
    limit: int = 0,
) -> BioCorpus:
    """A reader of `path` in `format` (spacy, pubtator, bioc, iob or bc2gm).

    labels: entity types to keep (all when None); source formats only.
    label_map: source type -> label, on top of the defaults (NCBI subtypes -> Disease, GENE -> Gene).
    level: "sentence" or "document" records; source formats only.
    limit: read at most this many documents (0: all).
    """
    return BioCorpus(Path(path), format, list(labels) if labels else None, dict(label_map), level, limit)
