"""Records to spaCy Docs and back, with gold entities at exact character offsets.

Tokens are split wherever an entity boundary falls inside one, so every entity maps to a
strict `char_span`; the splits are counted. `Doc.text` always equals `Record.text`. Where the
source corpus gives the sentences, they become the Doc's sentence starts, so that
`bioselecttune_ner` prompts the corpus's own sentences.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..engine.corpora import split_record_id
from ..engine.records import Entity, Record
from ..errors import Errors


@dataclass
class DocConversion:
    """What turning records into Docs had to change: tokens split at entity boundaries."""

    docs: int = 0
    entities: int = 0
    split_tokens: int = 0
    examples: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _words_and_spaces(nlp: Language, text: str, cuts: Iterable[int]) -> Tuple[List[str], List[bool], int]:
    """Tokenizer words, each further split at the offsets in `cuts`; also the number of splits."""
    cut_set = set(cuts)
    words: List[str] = []
    spaces: List[bool] = []
    splits = 0
    for token in nlp.tokenizer(text):
        start = token.idx
        end = start + len(token.text)
        inner = sorted(c for c in cut_set if start < c < end)
        pieces = [start, *inner, end]
        splits += len(inner)
        for i, (a, b) in enumerate(zip(pieces, pieces[1:])):
            words.append(text[a:b])
            spaces.append(bool(token.whitespace_) if i == len(pieces) - 2 else False)
    return words, spaces, splits


def record_to_doc(
    nlp: Language,
    record: Record,
    conversion: DocConversion | None = None,
    sentences: Optional[Sequence[Tuple[int, int]]] = None,
) -> Doc:
    """A Doc with the record's text and its entities as `doc.ents` at the same offsets.

    `doc.user_data` holds `id`, `doc_id` and `sent_start` (the record's offset in its document).
    sentences: the record's sentences as (start, end) offsets, where its source gives them; they
        become the Doc's sentence starts (tokens are split where one starts inside a token).
    """
    sentence_starts = {start for start, _ in sentences or ()}
    cuts = [offset for ent in record.entities for offset in (ent.start, ent.end)] + sorted(sentence_starts)
    words, spaces, splits = _words_and_spaces(nlp, record.text, cuts)
    starts = None
    if sentences is not None:
        offsets = itertools.accumulate([len(w) + s for w, s in zip(words, spaces)], initial=0)
        starts = [offset in sentence_starts or offset == 0 for offset, _ in zip(offsets, words)]
    doc = Doc(nlp.vocab, words=words, spaces=spaces, sent_starts=starts)
    if doc.text != record.text:
        raise ValueError(Errors.E215.format(record_id=record.id, problem=f"{record.text!r} became {doc.text!r}"))
    spans = []
    for ent in record.entities:
        span = doc.char_span(ent.start, ent.end, label=ent.label, alignment_mode="strict")
        if span is None:
            problem = f"entity {ent.start}-{ent.end} {record.text[ent.start:ent.end]!r} starts or ends in whitespace"
            raise ValueError(Errors.E215.format(record_id=record.id, problem=problem))
        spans.append(span)
    doc.ents = spans
    doc_id, sent_start = split_record_id(record.id)
    doc.user_data.update({"id": record.id, "doc_id": doc_id, "sent_start": sent_start})
    if conversion is not None:
        conversion.docs += 1
        conversion.entities += len(spans)
        conversion.split_tokens += splits
        if splits and len(conversion.examples) < 5:
            conversion.examples.append(f"{record.id}: {[s.text for s in spans]}")
    return doc


def doc_to_record(doc: Doc) -> Record:
    """The record a Doc holds: its id from `user_data`, text and `doc.ents`."""
    entities = tuple(sorted(Entity(span.start_char, span.end_char, span.label_) for span in doc.ents))
    return Record(str(doc.user_data.get("id", "")), doc.text, entities)


def source_offsets(doc: Doc) -> List[Entity]:
    """The Doc's entities at offsets in its source document (`sent_start` added)."""
    start = int(doc.user_data.get("sent_start", 0))
    return [Entity(span.start_char + start, span.end_char + start, span.label_) for span in doc.ents]


def new_docbin() -> DocBin:
    """An empty DocBin that keeps the text, the entities, the sentence starts and `user_data`."""
    return DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE", "SENT_START"], store_user_data=True)


def records_to_docbin(nlp: Language, records: Iterable[Record], conversion: DocConversion | None = None) -> DocBin:
    """A DocBin (with user data) of the records' Docs."""
    docbin = new_docbin()
    for record in records:
        docbin.add(record_to_doc(nlp, record, conversion))
    return docbin


def docbin_records(nlp: Language, docbin: DocBin) -> Iterator[Record]:
    """The records held by a DocBin."""
    for doc in docbin.get_docs(nlp.vocab):
        yield doc_to_record(doc)

