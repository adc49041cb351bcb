"""Records to Docs and back: strict char spans, token splits, and the round trip on every corpus."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bioselecttune.engine.corpora import read_documents, read_records
from spacy_bioselecttune.engine.records import Entity, Record
from spacy_bioselecttune.pipeline.docs import (
    DocConversion,
    doc_to_record,
    docbin_records,
    record_to_doc,
    records_to_docbin,
    source_offsets,
)

CORPORA = Path(__file__).parents[2] / ".." / "shared" / "corpora"
needs_corpora = pytest.mark.skipif(not CORPORA.is_dir(), reason=f"source corpora not found at {CORPORA}")


BLANK = spacy.blank("en")


@pytest.fixture(scope="module")
def nlp():
    return BLANK


def test_record_to_doc_keeps_text_offsets_and_ids(nlp):
    record = Record("bc5cdr/test/1001@32", "Aspirin reduced colorectal cancer.", (Entity(0, 7, "Chemical"), Entity(16, 33, "Disease")))
    doc = record_to_doc(nlp, record)
    assert doc.text == record.text
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [(0, 7, "Chemical"), (16, 33, "Disease")]
    assert doc.user_data == {"id": record.id, "doc_id": "bc5cdr/test/1001", "sent_start": 32}
    assert source_offsets(doc) == [Entity(32, 39, "Chemical"), Entity(48, 65, "Disease")]
    assert doc_to_record(doc) == record


def test_entity_boundary_inside_a_token_splits_it_and_counts(nlp):
    record = Record("r", "Tp53mutant cells and BRCA1", (Entity(0, 4, "Gene"), Entity(21, 26, "Gene")))
    assert len(nlp.make_doc("Tp53mutant")) == 1
    conversion = DocConversion()
    doc = record_to_doc(nlp, record, conversion)
    assert [e.text for e in doc.ents] == ["Tp53", "BRCA1"]
    assert doc.text == record.text
    assert conversion.split_tokens >= 1 and conversion.entities == 2 and conversion.examples


def test_entity_on_whitespace_is_an_error(nlp):
    with pytest.raises(ValueError, match="E215"):
        record_to_doc(nlp, Record("r", "a  b", (Entity(1, 3, "X"),)))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab -.(\n", min_size=1, max_size=30), st.data())
def test_any_non_whitespace_span_survives_the_round_trip(text, data):
    nlp = BLANK
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    entities = () if text[start:end].strip() != text[start:end] else (Entity(start, end, "X"),)
    record = Record("r", text, entities)
    assert doc_to_record(record_to_doc(nlp, record)) == record


def test_given_sentences_become_sentence_starts_that_survive_the_docbin(nlp):
    record = Record("a/0", "Aspirin helps.It  works. Yes", (Entity(0, 7, "Chemical"),))
    doc = record_to_doc(nlp, record, sentences=[(0, 14), (14, 24), (25, 28)])
    assert [sent.text for sent in doc.sents] == ["Aspirin helps.", "It  works.", "Yes"]  # "helps.It" split at the start
    docbin = records_to_docbin(nlp, [])
    docbin.add(doc)
    docbin.add(record_to_doc(nlp, Record("a/1", "One. Two.", ()), sentences=[(0, 9)]))
    docbin.add(record_to_doc(nlp, record))
    restored = list(type(docbin)().from_bytes(docbin.to_bytes()).get_docs(nlp.vocab))
    assert [sent.text for sent in restored[0].sents] == ["Aspirin helps.", "It  works.", "Yes"]
    assert [sent.text for sent in restored[1].sents] == ["One. Two."]
    assert not restored[2].has_annotation("SENT_START")  # no sentences given: left to the pipeline
    assert doc_to_record(restored[0]) == record


def test_docbin_round_trip(nlp):
    records = [
        Record("a/0", "Cisplatin caused nephrotoxicity.", (Entity(0, 9, "Chemical"), Entity(17, 31, "Disease"))),
        Record("a/1@40", "No entity here.", ()),
    ]
    docbin = records_to_docbin(nlp, records)
    restored = type(docbin)().from_bytes(docbin.to_bytes())
    assert list(docbin_records(nlp, restored)) == records


ROUND_TRIP_FILES = [
    ("pubtator", "ncbi-disease/pubtator/NCBItestset_corpus.txt"),
    ("iob", "ncbi-disease/NCBI-disease-IOB/test.tsv"),
    ("pubtator", "bc5cdr/pubtator/CDR_TestSet.PubTator.txt"),
    ("bioc", "bc5cdr/bioc/CDR_TestSet.BioC.xml"),
    ("iob", "bc5cdr/BC5CDR-IOB/test.tsv"),
    ("bc2gm", "bc2gm/original/test/test.in"),
    ("iob", "bc2gm/BC2GM-IOB/test.tsv"),
    ("iob", "jnlpba/JNLPBA-IOB/test.tsv"),
]


@needs_corpora
@pytest.mark.parametrize("format,path", ROUND_TRIP_FILES)
def test_every_gold_mention_returns_to_its_source_offsets(nlp, format, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        documents = {d.id: d for d in read_documents(format, CORPORA / path)}
        records = list(read_records(format, CORPORA / path, level="sentence"))
    round_tripped = []
    for record in records:
        doc = record_to_doc(nlp, record)
        source = documents[doc.user_data["doc_id"]]
        for ent in source_offsets(doc):
            assert source.text[ent.start : ent.end] == record.text[ent.start - doc.user_data["sent_start"] : ent.end - doc.user_data["sent_start"]]
            round_tripped.append((source.id, ent))
    expected = [(d.id, e) for d in documents.values() for e in d.entities]
    assert sorted(round_tripped) == sorted(expected)


@needs_corpora
def test_ncbi_test_split_survives_docbin_serialisation(nlp):
    records = list(read_records("iob", CORPORA / "ncbi-disease/NCBI-disease-IOB/test.tsv", id_prefix="ncbi-disease/test/"))
    docbin = records_to_docbin(nlp, records)
    restored = list(docbin_records(nlp, type(docbin)().from_bytes(docbin.to_bytes())))
    assert restored == records
    assert len(restored) == 940 and sum(len(r.entities) for r in restored) == 960
