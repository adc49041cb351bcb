"""Readers for PubTator, BioC XML, IOB2 TSV and BC2GM originals, yielding Records.

Every mention is checked against the text at its offsets. Whatever a rule excludes or
repairs is counted, with examples, in a `ConversionReport`; malformed input raises an
error that names the file and line. Rules (see `RULES`) are documented in corpus/README.md.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import Errors, Warnings, warn
from .records import Entity, Record
from .sentences import split_sentences

FORMATS = ("pubtator", "bioc", "iob", "bc2gm")
LEVELS = ("sentence", "document")
MAX_EXAMPLES = 5

# Label names used by the sources, mapped to the names the product uses.
DEFAULT_LABEL_MAP: Dict[str, str] = {
    "SpecificDisease": "Disease",
    "DiseaseClass": "Disease",
    "Modifier": "Disease",
    "CompositeMention": "Disease",
    "GENE": "Gene",
}
# Label given to untyped mentions (BC2GM originals, bare B/I tags).
UNTYPED_LABEL = "Gene"

# What each rule does; a report counts every rule that fired.
RULES: Dict[str, str] = {
    "duplicate_document": "excluded: a second, identical copy of a document id",
    "repeated_document_id": "kept, renamed id~N: a document id seen before with different content",
    "relation_line": "skipped: relation annotations (BC5CDR CID) are not mentions",
    "label_not_kept": "excluded: mention type not among the requested labels",
    "text_mismatch": "excluded: the mention text differs from the document slice at its offsets",
    "text_whitespace_differs": "kept, offsets trusted: mention text equals the slice up to surrounding whitespace",
    "composite_mention": "kept as the single span given: composite mention (several concepts in one span)",
    "composite_part": "excluded: BioC IndividualMention, a part of a composite mention kept as a whole",
    "discontinuous": "excluded: mention with several locations (discontinuous span)",
    "duplicate_mention": "excluded: the same span and label given twice",
    "overlapping_mention": "excluded: overlaps a longer kept mention (the longest wins, then the earliest)",
    "stray_inside_tag": "kept, repaired: I- tag without a preceding B- of the same type starts a mention",
    "beyond_limit": "not converted: documents after the --limit",
}

# Exclusion rules that follow from a choice rather than a data problem.
BY_DESIGN = ("label_not_kept", "composite_part")


@dataclass
class RuleCount:
    """How often a rule fired, with a few examples."""

    count: int = 0
    examples: List[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    """What a conversion read, kept and excluded, per rule."""

    source: str = ""
    format: str = ""
    level: str = "sentence"
    documents: int = 0
    records: int = 0
    positive_records: int = 0
    mentions: Counter = field(default_factory=Counter)
    rules: Dict[str, RuleCount] = field(default_factory=dict)
    seconds: float = 0.0

    def note(self, rule: str, example: str) -> None:
        """Count one firing of `rule`, keeping the first few examples."""
        entry = self.rules.setdefault(rule, RuleCount())
        entry.count += 1
        if len(entry.examples) < MAX_EXAMPLES:
            entry.examples.append(example)

    def add_record(self, record: Record) -> None:
        """Count a record that was kept, with its mentions per label."""
        self.records += 1
        self.positive_records += record.is_positive
        self.mentions.update(entity.label for entity in record.entities)

    def count(self, rule: str) -> int:
        entry = self.rules.get(rule)
        return entry.count if entry else 0

    def excluded_mentions(self) -> Dict[str, int]:
        """Counts of the rules that removed mentions."""
        mention_rules = (
            "label_not_kept",
            "text_mismatch",
            "composite_part",
            "discontinuous",
            "duplicate_mention",
            "overlapping_mention",
        )
        return {rule: self.rules[rule].count for rule in mention_rules if rule in self.rules}

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "format": self.format,
            "level": self.level,
            "documents": self.documents,
            "records": self.records,
            "positive_records": self.positive_records,
            "mentions": dict(sorted(self.mentions.items())),
            "rules": {
                rule: {"count": entry.count, "meaning": RULES[rule], "examples": entry.examples}
                for rule, entry in sorted(self.rules.items())
            },
            "seconds": round(self.seconds, 3),
        }

    def table(self) -> str:
        """A short plain-text summary."""
        lines = [
            f"{self.source} ({self.format}, {self.level} level): {self.documents} documents, "
            f"{self.records} records ({self.positive_records} with entities), {self.seconds:.2f} s",
        ]
        lines += [f"  {label:<20} {count:>7}" for label, count in sorted(self.mentions.items())]
        lines += [f"  [{rule}] {entry.count}: {RULES[rule]}" for rule, entry in sorted(self.rules.items())]
        return "\n".join(lines)


class Notes:
    """Rule firings of the document being read; they reach the report only if the document is kept."""

    def __init__(self) -> None:
        self._pending: List[Tuple[str, str]] = []

    def note(self, rule: str, example: str) -> None:
        self._pending.append((rule, example))

    def take(self) -> Tuple[Tuple[str, str], ...]:
        """The pending notes, which are then cleared."""
        taken, self._pending = tuple(self._pending), []
        return taken


@dataclass(frozen=True)
class Document:
    """A source document: its text, checked entities and the sentence spans to cut out."""

    id: str
    text: str
    entities: Tuple[Entity, ...]
    sentences: Optional[Tuple[Tuple[int, int], ...]] = None
    breaks: Tuple[int, ...] = ()
    notes: Tuple[Tuple[str, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Dataset:
    """A named benchmark: its format, label set and split files under the corpus root."""

    name: str
    format: str
    labels: Tuple[str, ...]
    splits: Tuple[Tuple[str, str], ...]


DATASETS: Dict[str, Dataset] = {
    "ncbi-disease": Dataset(
        "ncbi-disease",
        "iob",
        ("Disease",),
        (
            ("train", "ncbi-disease/NCBI-disease-IOB/train.tsv"),
            ("dev", "ncbi-disease/NCBI-disease-IOB/devel.tsv"),
            ("test", "ncbi-disease/NCBI-disease-IOB/test.tsv"),
        ),
    ),
    "bc5cdr": Dataset(
        "bc5cdr",
        "iob",
        ("Chemical", "Disease"),
        (
            ("train", "bc5cdr/BC5CDR-IOB/train.tsv"),
            ("dev", "bc5cdr/BC5CDR-IOB/devel.tsv"),
            ("test", "bc5cdr/BC5CDR-IOB/test.tsv"),
        ),
    ),
    "bc2gm": Dataset(
        "bc2gm",
        "iob",
        ("Gene",),
        (
            ("train", "bc2gm/BC2GM-IOB/train.tsv"),
            ("dev", "bc2gm/BC2GM-IOB/devel.tsv"),
            ("test", "bc2gm/BC2GM-IOB/test.tsv"),
        ),
    ),
    "jnlpba": Dataset(
        "jnlpba",
        "iob",
        ("protein", "DNA", "RNA", "cell_type", "cell_line"),
        (
            ("train", "jnlpba/JNLPBA-IOB/train.tsv"),
            ("dev", "jnlpba/JNLPBA-IOB/devel.tsv"),
            ("test", "jnlpba/JNLPBA-IOB/test.tsv"),
        ),
    ),
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(Errors.E211.format(name=name, known=", ".join(DATASETS)))
    return DATASETS[name]


def parse_label_map(items: Iterable[str]) -> Dict[str, str]:
    """Turn `NAME=LABEL` strings into a mapping."""
    mapping = {}
    for item in items:
        name, sep, label = item.partition("=")
        if not sep or not name.strip() or not label.strip():
            raise ValueError(Errors.E212.format(value=item))
        mapping[name.strip()] = label.strip()
    return mapping


def sentence_record_id(doc_id: str, sent_start: int) -> str:
    """The id of a sentence cut out of a document at character `sent_start`."""
    return f"{doc_id}@{sent_start}"


def split_record_id(record_id: str) -> Tuple[str, int]:
    """The document id and sentence offset encoded in a record id (offset 0 for whole documents)."""
    doc_id, sep, start = record_id.rpartition("@")
    if sep and start.isdigit():
        return doc_id, int(start)
    return record_id, 0


# --- sentence splitting --------------------------------------------------------------

def sentence_spans(
    text: str, entities: Sequence[Entity] = (), breaks: Sequence[int] = ()
) -> List[Tuple[int, int]]:
    """Sentence spans of `text` (whitespace trimmed) that never cut a mention.

    Sentence ends come from `split_sentences`, plus `breaks` (offsets where a sentence
    always ends, such as the end of a title); an end inside a mention is not used.
    """
    cuts = {end for _, end in split_sentences(text)}
    cuts.update(b for b in breaks if 0 < b < len(text))
    cuts.add(len(text))
    spans = []
    start = 0
    for cut in sorted(cuts):
        if any(ent.start < cut < ent.end for ent in entities):
            continue
        spans.append((start, cut))
        start = cut
    trimmed = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            trimmed.append((s, e))
    return trimmed


# --- shared checks ---------------------------------------------------------------------


def _read_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, line without its line break), decoding UTF-8 strictly line by line."""
    if not path.is_file():
        raise FileNotFoundError(Errors.E214.format(path=path))
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf8")
            except UnicodeDecodeError as err:
                raise ValueError(Errors.E200.format(path=path, line=number, reason=err.reason)) from None
            yield number, line.rstrip("\n").rstrip("\r")


def _map_label(label: str, label_map: Mapping[str, str]) -> str:
    return label_map.get(label, label)


def _resolve_overlaps(entities: Sequence[Entity], notes: Notes, where: str) -> Tuple[Entity, ...]:
    """Keep the longest of overlapping mentions (then the earliest); count the rest."""
    kept: List[Entity] = []
    seen = set()
    order = sorted(range(len(entities)), key=lambda i: (-(entities[i].end - entities[i].start), i))
    for i in order:
        ent = entities[i]
        if ent in seen:
            notes.note("duplicate_mention", f"{where}: {ent.start}-{ent.end} {ent.label}")
            continue
        clash = next((k for k in kept if k.start < ent.end and ent.start < k.end), None)
        if clash is not None:
            notes.note(
                "overlapping_mention",
                f"{where}: {ent.start}-{ent.end} {ent.label} overlaps {clash.start}-{clash.end} {clash.label}",
            )
            continue
        kept.append(ent)
        seen.add(ent)
    return tuple(sorted(kept))


class _Checker:
    """Validates one mention against its document and applies the label rules."""

    def __init__(self, path: Path, notes: Notes, labels: Optional[Sequence[str]], label_map: Mapping[str, str]):
        self.path = path
        self.notes = notes
        self.labels = set(labels) if labels else None
        self.label_map = {**DEFAULT_LABEL_MAP, **label_map}

    def check(
        self, doc_id: str, text: str, start: int, end: int, label: str, mention: Optional[str], line: int, where: str
    ) -> Optional[Entity]:
        """The entity for a mention, or None when a rule excludes it; raises on impossible offsets."""
        if not 0 <= start < end <= len(text):
            if line:
                raise ValueError(
                    Errors.E202.format(path=self.path, line=line, start=start, end=end, doc_id=doc_id, length=len(text))
                )
            problem = f"{where}: offsets {start}-{end} do not fit the text (length {len(text)})"
            raise ValueError(Errors.E207.format(path=self.path, doc_id=doc_id, problem=problem))
        found = text[start:end]
        if mention is not None and found != mention:
            if found.strip() == mention.strip():
                self.notes.note("text_whitespace_differs", f"{where}: {start}-{end} {mention!r}")
            else:
                self.notes.note("text_mismatch", f"{where}: {start}-{end} give {found!r}, annotation says {mention!r}")
                return None
        mapped = _map_label(label, self.label_map)
        if self.labels is not None and mapped not in self.labels:
            self.notes.note("label_not_kept", f"{where}: {label} {found!r}")
            return None
        return Entity(start, end, mapped)


# --- PubTator ---------------------------------------------------------------------------


def read_pubtator(
    path: Path,
    notes: Notes,
    labels: Optional[Sequence[str]] = None,
    label_map: Mapping[str, str] = {},
    id_prefix: str = "",
) -> Iterator[Document]:
    """Documents of a PubTator file: text is title + " " + abstract, offsets over it."""
    path = Path(path)
    checker = _Checker(path, notes, labels, label_map)
    pmid: Optional[str] = None
    title = text = ""
    entities: List[Entity] = []

    def malformed(number: int, expected: str, line: str) -> ValueError:
        return ValueError(Errors.E201.format(path=path, line=number, expected=expected, value=line))

    def finish() -> Document:
        kept = _resolve_overlaps(entities, notes, f"{path.name} {pmid}")
        return Document(f"{id_prefix}{pmid}", text, kept, breaks=(len(title),), notes=notes.take())

    for number, line in _read_lines(path):
        if not line.strip():
            if pmid is not None:
                yield finish()
            pmid, title, text, entities = None, "", "", []
            continue
        if "|" in line and "\t" not in line.split("|", 1)[0]:
            head, _, rest = line.partition("|")
            kind, sep, body = rest.partition("|")
            if not sep or kind not in ("t", "a") or not head.strip():
                raise malformed(number, "'PMID|t|title' or 'PMID|a|abstract'", line)
            if (kind == "t" and pmid is not None) or (kind == "a" and head != pmid):
                raise ValueError(Errors.E203.format(path=path, line=number, found=head, expected=pmid))
            if kind == "t":
                pmid, title, text = head, body, body
            else:
                text = f"{title} {body}"
            continue
        columns = line.split("\t")
        if pmid is None:
            raise malformed(number, "a 'PMID|t|title' line first", line)
        if columns[0] != pmid:
            raise ValueError(Errors.E203.format(path=path, line=number, found=columns[0], expected=pmid))
        if len(columns) == 4 and not columns[1].isdigit():
            notes.note("relation_line", f"{path.name} line {number}: {line!r}")
            continue
        if len(columns) < 5 or not columns[1].isdigit() or not columns[2].isdigit():
            raise malformed(number, "PMID<TAB>start<TAB>end<TAB>text<TAB>type[<TAB>id]", line)
        start, end, mention, label = int(columns[1]), int(columns[2]), columns[3], columns[4]
        where = f"{path.name} line {number}"
        entity = checker.check(f"{id_prefix}{pmid}", text, start, end, label, mention, number, where)
        if entity is None:
            continue
        identifier = columns[5] if len(columns) > 5 else ""
        if label == "CompositeMention" or "|" in identifier:
            notes.note("composite_mention", f"{where}: {mention!r}")
        entities.append(entity)
    if pmid is not None:
        yield finish()


# --- BioC XML ---------------------------------------------------------------------------


def _infons(element: ET.Element) -> Dict[str, str]:
    return {infon.get("key", ""): (infon.text or "") for infon in element.findall("infon")}


def read_bioc(
    path: Path,
    notes: Notes,
    labels: Optional[Sequence[str]] = None,
    label_map: Mapping[str, str] = {},
    id_prefix: str = "",
) -> Iterator[Document]:
    """Documents of a BioC XML collection; passages are placed at their document offsets.

    The DTD the files name is never loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(Errors.E214.format(path=path))
    checker = _Checker(path, notes, labels, label_map)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        line, column = err.position
        raise ValueError(Errors.E206.format(path=path, line=line, column=column, reason=err.msg)) from None
    for document in root.iter("document"):
        doc_id = (document.findtext("id") or "").strip() or "(no id)"

        def malformed(problem: str) -> ValueError:
            return ValueError(Errors.E207.format(path=path, doc_id=doc_id, problem=problem))

        text = ""
        breaks = []
        annotations = []
        for passage in document.findall("passage"):
            offset = (passage.findtext("offset") or "").strip()
            if not offset.isdigit() or int(offset) < len(text):
                raise malformed(f"passage offset {offset!r} is not a number at or after {len(text)}")
            if text:
                breaks.append(len(text))
            text = text.ljust(int(offset)) + (passage.findtext("text") or "")
            annotations.extend(passage.findall("annotation"))
        for _ in document.iter("relation"):
            notes.note("relation_line", f"{path.name} document {doc_id}: relation")
        entities = []
        for annotation in annotations:
            infons = _infons(annotation)
            mention = annotation.findtext("text") or ""
            locations = annotation.findall("location")
            where = f"{path.name} document {doc_id} annotation {annotation.get('id')}"
            if infons.get("CompositeRole") == "IndividualMention":
                notes.note("composite_part", f"{where}: {mention!r}")
                continue
            if len(locations) > 1:
                notes.note("discontinuous", f"{where}: {mention!r}")
                continue
            offset, length = (locations[0].get("offset", ""), locations[0].get("length", "")) if locations else ("", "")
            if not offset.isdigit() or not length.isdigit():
                raise malformed(f"annotation {annotation.get('id')} lacks a numeric <location offset length>")
            if infons.get("CompositeRole") == "CompositeMention" or "|" in infons.get("MESH", ""):
                notes.note("composite_mention", f"{where}: {mention!r}")
            start, end = int(offset), int(offset) + int(length)
            entity = checker.check(f"{id_prefix}{doc_id}", text, start, end, infons.get("type", ""), mention, 0, where)
            if entity is not None:
                entities.append(entity)
        kept = _resolve_overlaps(entities, notes, f"{path.name} {doc_id}")
        yield Document(f"{id_prefix}{doc_id}", text, kept, breaks=tuple(breaks), notes=notes.take())


# --- IOB2 TSV ---------------------------------------------------------------------------

_DOC_MARKERS = ("-DOCSTART-", "###MEDLINE:")


def read_iob(
    path: Path,
    notes: Notes,
    labels: Optional[Sequence[str]] = None,
    label_map: Mapping[str, str] = {},
    id_prefix: str = "",
) -> Iterator[Document]:
    """Documents of an IOB2 TSV file; tokens are joined by single spaces.

    Files with `-DOCSTART-` or `###MEDLINE:<id>` lines give one document per marker, its
    sentences joined by spaces; files without them give one document per sentence.
    """
    path = Path(path)
    checker = _Checker(path, notes, labels, label_map)
    documents: List[Tuple[str, List[List[Tuple[int, str, str]]]]] = []
    sentence: List[Tuple[int, str, str]] = []
    has_markers = False

    def close_sentence() -> None:
        if sentence:
            if not documents:
                documents.append(("", []))
            documents[-1][1].append(list(sentence))
            sentence.clear()

    def build(doc_id: str, sentences: List[List[Tuple[int, str, str]]]) -> Document:
        parts: List[str] = []
        spans = []
        entities: List[Entity] = []
        offset = 0
        for tokens in sentences:
            sent_start = offset
            open_entity: Optional[List] = None
            for number, token, tag in tokens:
                start = offset
                end = start + len(token)
                kind, _, typ = tag.partition("-")
                label = typ or UNTYPED_LABEL
                if kind == "I" and (open_entity is None or open_entity[2] != label):
                    notes.note("stray_inside_tag", f"{path.name} line {number}: {tag} {token!r}")
                    kind = "B"
                if kind != "I" and open_entity is not None:
                    entities.append(open_entity)
                    open_entity = None
                if kind == "B":
                    open_entity = [start, end, label, number]
                elif kind == "I":
                    open_entity[1] = end
                parts.append(token)
                offset = end + 1
            if open_entity is not None:
                entities.append(open_entity)
            spans.append((sent_start, offset - 1))
        text = " ".join(parts)
        checked = []
        for start, end, label, number in entities:
            entity = checker.check(doc_id, text, start, end, label, None, number, f"{path.name} line {number}")
            if entity is not None:
                checked.append(entity)
        kept = _resolve_overlaps(checked, notes, f"{path.name} {doc_id}")
        return Document(doc_id, text, kept, sentences=tuple(spans), notes=notes.take())

    for number, line in _read_lines(path):
        if not line.strip():
            close_sentence()
            continue
        if line.startswith(_DOC_MARKERS):
            close_sentence()
            has_markers = True
            marker = line.split("\t", 1)[0]
            documents.append((marker.split(":", 1)[1] if marker.startswith("###MEDLINE:") else "", []))
            continue
        token, sep, tag = line.partition("\t")
        if not sep or not token or " " in token or "\t" in tag:
            raise ValueError(Errors.E204.format(path=path, line=number, value=line))
        tag = tag.strip()
        if not (tag in ("O", "B", "I") or (tag[:2] in ("B-", "I-") and len(tag) > 2)):
            raise ValueError(Errors.E205.format(path=path, line=number, tag=tag))
        sentence.append((number, token, tag))
    close_sentence()
    if has_markers:
        for index, (marker_id, sentences) in enumerate(documents):
            if sentences:
                yield build(f"{id_prefix}{marker_id or f'{index:06d}'}", sentences)
    else:
        index = 0
        for _, sentences in documents:
            for tokens in sentences:
                yield build(f"{id_prefix}{index:06d}", [tokens])
                index += 1


# --- BC2GM originals --------------------------------------------------------------------


def read_bc2gm(
    path: Path,
    notes: Notes,
    labels: Optional[Sequence[str]] = None,
    label_map: Mapping[str, str] = {},
    id_prefix: str = "",
    genes_path: Optional[Path] = None,
) -> Iterator[Document]:
    """Sentences of a BC2GM `*.in` file (or the directory holding it) with mentions from `GENE.eval`.

    GENE.eval offsets count non-whitespace characters and the end is inclusive; they are
    mapped to character offsets. ALTGENE.eval (alternative boundaries) is not read.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.in"))
        if len(candidates) != 1:
            raise FileNotFoundError(Errors.E214.format(path=path / "*.in"))
        path = candidates[0]
    genes_path = Path(genes_path) if genes_path else path.with_name("GENE.eval")
    checker = _Checker(genes_path, notes, labels, label_map)
    sentences: List[Tuple[str, str]] = []
    for number, line in _read_lines(path):
        sentence_id, sep, text = line.partition(" ")
        if line.strip() and (not sep or not sentence_id):
            raise ValueError(Errors.E208.format(path=path, line=number, expected="'SENTENCE_ID text'", value=line))
        if line.strip():
            sentences.append((sentence_id, text))
    known = {sentence_id for sentence_id, _ in sentences}
    mentions: Dict[str, List[Tuple[int, int, int, str]]] = {}
    for number, line in _read_lines(genes_path):
        if not line.strip():
            continue
        parts = line.split("|", 2)
        offsets = parts[1].split() if len(parts) == 3 else []
        if len(offsets) != 2 or not all(o.isdigit() for o in offsets):
            expected = "'SENTENCE_ID|start end|text'"
            raise ValueError(Errors.E208.format(path=genes_path, line=number, expected=expected, value=line))
        if parts[0] not in known:
            raise ValueError(Errors.E209.format(path=genes_path, line=number, sentence_id=parts[0], sentences=path))
        mentions.setdefault(parts[0], []).append((number, int(offsets[0]), int(offsets[1]), parts[2]))
    for sentence_id, text in sentences:
        positions = [i for i, char in enumerate(text) if not char.isspace()]
        entities = []
        for number, first, last, mention in mentions.get(sentence_id, []):
            if last >= len(positions) or first > last:
                raise ValueError(
                    Errors.E202.format(
                        path=genes_path, line=number, start=first, end=last, doc_id=sentence_id, length=len(positions)
                    )
                )
            start, end = positions[first], positions[last] + 1
            where = f"{genes_path.name} line {number}"
            entity = checker.check(sentence_id, text, start, end, UNTYPED_LABEL, mention, number, where)
            if entity is not None:
                entities.append(entity)
        kept = _resolve_overlaps(entities, notes, f"{genes_path.name} {sentence_id}")
        yield Document(f"{id_prefix}{sentence_id}", text, kept, sentences=((0, len(text)),), notes=notes.take())


READERS = {"pubtator": read_pubtator, "bioc": read_bioc, "iob": read_iob, "bc2gm": read_bc2gm}


# --- records ----------------------------------------------------------------------------


def document_records(document: Document, level: str = "sentence") -> List[Record]:
    """The records of a document: itself, or its sentences with offsets relative to each sentence.

    A sentence's id is `doc_id@start`; a document that is one sentence keeps its own id.
    """
    if level == "document":
        return [Record(document.id, document.text, document.entities)]
    spans = document.sentences or sentence_spans(document.text, document.entities, document.breaks)
    if list(spans) == [(0, len(document.text))]:
        return [Record(document.id, document.text, document.entities)]
    records = []
    for start, end in spans:
        inside = tuple(
            Entity(e.start - start, e.end - start, e.label) for e in document.entities if start <= e.start and e.end <= end
        )
        records.append(Record(sentence_record_id(document.id, start), document.text[start:end], inside))
    return records


def _deduplicated(documents: Iterable[Document], report: ConversionReport) -> Iterator[Document]:
    seen: Dict[str, List[Document]] = {}
    for document in documents:
        copies = seen.setdefault(document.id, [])
        if document in copies:
            report.note("duplicate_document", f"{document.id}")
            continue
        copies.append(document)
        if len(copies) > 1:
            new_id = f"{document.id}~{len(copies)}"
            report.note("repeated_document_id", f"{document.id} -> {new_id}")
            document = replace(document, id=new_id)
        yield document


def read_documents(
    format: str,
    path: Path,
    report: Optional[ConversionReport] = None,
    labels: Optional[Sequence[str]] = None,
    label_map: Mapping[str, str] = {},
    id_prefix: str = "",
    limit: int = 0,
) -> Iterator[Document]:
    """Checked, deduplicated documents of a corpus file in any supported format."""
    if format not in READERS:
        raise ValueError(Errors.E210.format(name=format, known=", ".join(FORMATS)))
    report = report if report is not None else ConversionReport()
    report.source, report.format = str(path), format
    documents = _deduplicated(READERS[format](Path(path), Notes(), labels, label_map, id_prefix), report)
    for document in documents:
        if limit and report.documents >= limit:
            report.note("beyond_limit", document.id)
            continue
        report.documents += 1
        for rule, example in document.notes:
            report.note(rule, example)
        yield document


def read_records(
    format: str,
    path: Path,
    report: Optional[ConversionReport] = None,
    labels: Optional[Sequence[str]] = None,
    label_map: Mapping[str, str] = {},
    level: str = "sentence",
    id_prefix: str = "",
    limit: int = 0,
) -> Iterator[Record]:
    """Records (sentences or documents) of a corpus file, counted into `report`."""
    if level not in LEVELS:
        raise ValueError(Errors.E213.format(level=level))
    report = report if report is not None else ConversionReport()
    report.level = level
    started = time.perf_counter()
    for document in read_documents(format, path, report, labels, label_map, id_prefix, limit):
        for record in document_records(document, level):
            report.add_record(record)
            yield record
    report.seconds += time.perf_counter() - started
    warn_exclusions(report)


def warn_exclusions(report: ConversionReport) -> None:
    """Warn once per file when data problems excluded mentions (the report has the details).

    Exclusions by design (`BY_DESIGN`: a type that was not requested, the parts of a composite
    mention) are reported but not warned about.
    """
    excluded = {rule: count for rule, count in report.excluded_mentions().items() if rule not in BY_DESIGN}
    if excluded:
        rules = ", ".join(f"{rule} {count}" for rule, count in excluded.items())
        warn(Warnings.W200.format(path=report.source, count=sum(excluded.values()), rules=rules))
