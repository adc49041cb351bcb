"""Corpus readers: offsets, rules and their counts, errors naming file and line, real counts."""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacy_bioselecttune.engine.corpora import (
    ConversionReport,
    Notes,
    document_records,
    parse_label_map,
    read_documents,
    read_iob,
    read_records,
    sentence_spans,
    split_record_id,
)
from spacy_bioselecttune.engine.records import Entity

FIXTURES = Path(__file__).parents[1] / "fixtures" / "corpora"
CORPORA = Path(__file__).parents[2] / ".." / "shared" / "corpora"
needs_corpora = pytest.mark.skipif(not CORPORA.is_dir(), reason=f"source corpora not found at {CORPORA}")


def read_all(format: str, path: Path, **kwargs):
    report = ConversionReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = list(read_records(format, path, report, **kwargs))
    return records, report


def slices(records):
    return [(r.text[e.start : e.end], e.label) for r in records for e in r.entities]


def test_pubtator_rules_are_counted_and_offsets_exact():
    report = ConversionReport()
    documents = list(read_documents("pubtator", FIXTURES / "small.pubtator.txt", report))
    assert [d.id for d in documents] == ["1001", "1002"]
    first = documents[0]
    assert first.text.startswith("Famotidine-associated delirium. Famotidine is")
    found = [(first.text[e.start : e.end], e.label) for e in first.entities]
    assert found == [
        ("Famotidine", "Chemical"),
        ("delirium", "Disease"),
        ("Famotidine", "Chemical"),
        ("Ovarian and breast cancer", "Disease"),
        ("delirium", "Disease"),
    ]
    assert report.count("duplicate_document") == 1
    assert report.count("relation_line") == 1
    assert report.count("text_whitespace_differs") == 1
    assert report.count("text_mismatch") == 1
    assert report.count("composite_mention") == 1
    assert report.count("overlapping_mention") == 1
    assert "histamine" in report.rules["text_mismatch"].examples[0]


def test_pubtator_ncbi_subtypes_map_to_disease_and_labels_filter():
    records, report = read_all("pubtator", FIXTURES / "small.pubtator.txt", labels=["Disease"], level="document")
    assert {label for _, label in slices(records)} == {"Disease"}
    assert ("Hereditary breast cancer", "Disease") in slices(records)
    assert report.count("label_not_kept") == 2
    assert report.mentions == Counter({"Disease": 5})


def test_label_map_overrides_defaults():
    records, _ = read_all("pubtator", FIXTURES / "small.pubtator.txt", label_map={"DiseaseClass": "Class"}, level="document")
    assert ("tumours", "Class") in slices(records)
    assert parse_label_map(["GENE=Gene", " a = b "]) == {"GENE": "Gene", "a": "b"}
    with pytest.raises(ValueError, match="E212"):
        parse_label_map(["GENE"])


def test_sentence_level_keeps_document_offsets_in_ids():
    documents = {d.id: d for d in read_documents("pubtator", FIXTURES / "small.pubtator.txt")}
    records, report = read_all("pubtator", FIXTURES / "small.pubtator.txt")
    assert report.records == len(records) > report.documents
    assert records[0].text == "Famotidine-associated delirium."
    for record in records:
        doc_id, start = split_record_id(record.id)
        source = documents[doc_id]
        assert source.text[start : start + len(record.text)] == record.text
        for ent in record.entities:
            assert Entity(ent.start + start, ent.end + start, ent.label) in source.entities
    assert sum(len(r.entities) for r in records) == sum(len(d.entities) for d in documents.values())


def test_sentence_spans_never_cut_a_mention():
    text = "Seen in E. coli. Then Dr. X came. A mention. Spans here."
    cut_inside = text.index("mention. Spans") + len("mention. Sp")
    mention = Entity(text.index("mention"), cut_inside, "X")
    spans = sentence_spans(text, [mention])
    assert all(not (s < mention.start < e < mention.end) for s, e in spans)
    assert any(s <= mention.start and mention.end <= e for s, e in spans)
    assert sentence_spans("Title without stop Abstract starts.", breaks=[18]) == [(0, 18), (19, 35)]


@given(st.text(alphabet="ab .?\nXY1", max_size=60), st.data())
def test_sentence_spans_cover_every_mention(text, data):
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    entities = [Entity(start, end, "X")] if text[start:end].strip() == text[start:end] and end > start else []
    spans = sentence_spans(text, entities)
    for s, e in spans:
        assert text[s:e] == text[s:e].strip() and e > s
    for ent in entities:
        assert any(s <= ent.start and ent.end <= e for s, e in spans)


def test_bioc_rules_crlf_and_no_dtd():
    records, report = read_all("bioc", FIXTURES / "small.bioc.xml", level="document")
    (record,) = records
    assert record.text.startswith("Famotidine-associated delirium. Ovarian and breast cancer")
    assert slices(records) == [
        ("Famotidine", "Chemical"),
        ("delirium", "Disease"),
        ("Ovarian and breast cancer", "Disease"),
        ("famotidine", "Chemical"),
        ("hepatic failure", "Disease"),
    ]
    assert report.count("composite_part") == 2
    assert report.count("discontinuous") == 1
    assert report.count("relation_line") == 1
    assert report.count("composite_mention") == 1


def test_iob_documents_sentences_and_gene_label():
    records, report = read_all("iob", FIXTURES / "small.iob.tsv", level="document")
    assert report.documents == 2
    assert records[0].text == "Famotidine causes acute delirium . No entities here ."
    assert slices(records) == [("Famotidine", "Chemical"), ("acute delirium", "Disease"), ("IL-2 gene", "Gene"), ("NF-kappa B", "Gene")]
    sentences, report = read_all("iob", FIXTURES / "small.iob.tsv", id_prefix="t/test/")
    assert [r.id for r in sentences] == ["t/test/000000@0", "t/test/000000@35", "t/test/000001"]
    assert [r.is_positive for r in sentences] == [True, False, True]


def test_iob_without_markers_gives_one_document_per_sentence():
    records, report = read_all("iob", FIXTURES / "plain.iob.tsv", id_prefix="p/train/")
    assert [r.id for r in records] == ["p/train/000000", "p/train/000001"]
    assert slices(records) == [("Famotidine", "Chemical"), ("delirium", "Disease")]


def test_iob_stray_inside_tag_is_repaired_and_counted(tmp_path):
    path = tmp_path / "stray.tsv"
    path.write_text("a\tO\nb\tI-Disease\nc\tI-Chemical\n\n", encoding="utf8")
    records, report = read_all("iob", path)
    assert slices(records) == [("b", "Disease"), ("c", "Chemical")]
    assert report.count("stray_inside_tag") == 2


@given(st.lists(st.tuples(st.sampled_from(["x", "yy", "IL-2", "."]), st.sampled_from(["O", "B-A", "I-A", "B-B"])), min_size=1, max_size=12))
def test_iob_spans_iob_round_trip(rows):
    tags = []
    previous = "O"
    for _, tag in rows:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        tags.append(tag)
        previous = tag
    lines = "".join(f"{token}\t{tag}\n" for (token, _), tag in zip(rows, tags)) + "\n"
    path = Path(__import__("tempfile").mkstemp(suffix=".tsv")[1])
    path.write_text(lines, encoding="utf8")
    notes = Notes()
    (document,) = read_iob(path, notes)
    path.unlink()
    rebuilt = []
    offset = 0
    for token, _ in rows:
        start, end = offset, offset + len(token)
        inside = [e for e in document.entities if e.start <= start and end <= e.end]
        rebuilt.append("O" if not inside else ("B-" if inside[0].start == start else "I-") + inside[0].label)
        offset = end + 1
    assert rebuilt == tags


def test_bc2gm_offsets_count_non_whitespace_and_end_inclusive():
    records, report = read_all("bc2gm", FIXTURES / "bc2gm" / "train.in")
    assert [r.id for r in records] == ["S1", "S2", "S3"]
    assert slices(records) == [
        ("alkaline phosphatases", "Gene"),
        ("5-nucleotidase", "Gene"),
        ("p53 protein", "Gene"),
        ("MDM2", "Gene"),
    ]
    assert report.count("overlapping_mention") == 1
    assert report.count("text_mismatch") == 1
    assert "'Thx'" in report.rules["text_mismatch"].examples[0]


def test_limit_counts_what_was_not_converted():
    records, report = read_all("iob", FIXTURES / "plain.iob.tsv", limit=1)
    assert len(records) == 1 and report.count("beyond_limit") == 1


def test_excluded_mentions_warn_with_code():
    with pytest.warns(UserWarning, match=r"\[W200\].*text_mismatch 1"):
        list(read_records("pubtator", FIXTURES / "small.pubtator.txt"))


@pytest.mark.parametrize(
    "format,name,code,line",
    [
        ("pubtator", "truncated.pubtator.txt", "E201", 4),
        ("pubtator", "offset_past_end.pubtator.txt", "E202", 4),
        ("iob", "no_tab.iob.tsv", "E204", 2),
        ("iob", "bad_tag.iob.tsv", "E205", 2),
        ("iob", "latin1.iob.tsv", "E200", 2),
        ("bioc", "not_well_formed.bioc.xml", "E206", 14),
    ],
)
def test_corrupted_input_names_file_and_line(format, name, code, line):
    path = FIXTURES / "broken" / name
    with pytest.raises(ValueError) as info:
        list(read_records(format, path))
    message = str(info.value)
    assert message.startswith(f"[{code}]")
    assert str(path) in message and f"line {line}" in message


def test_missing_file_and_unknown_format():
    with pytest.raises(FileNotFoundError, match="E214"):
        list(read_records("iob", FIXTURES / "absent.tsv"))
    with pytest.raises(ValueError, match="E210"):
        list(read_records("conll", FIXTURES / "plain.iob.tsv"))
    with pytest.raises(ValueError, match="E213"):
        list(read_records("iob", FIXTURES / "plain.iob.tsv", level="paragraph"))


def test_document_records_of_single_sentence_keep_the_id():
    (document,) = list(read_documents("bc2gm", FIXTURES / "bc2gm" / "train.in"))[:1]
    (record,) = document_records(document)
    assert record.id == "S1" and record.entities == document.entities


@needs_corpora
@pytest.mark.parametrize(
    "format,path,documents,mentions,rules",
    [
        ("iob", "ncbi-disease/NCBI-disease-IOB/test.tsv", 940, {"Disease": 960}, {}),
        ("iob", "ncbi-disease/NCBI-disease-IOB/train.tsv", 5424, {"Disease": 5134}, {}),
        (
            "pubtator",
            "ncbi-disease/pubtator/NCBItrainset_corpus.txt",
            592,
            {"Disease": 5134},
            {"duplicate_document": 1, "text_whitespace_differs": 1},
        ),
        ("pubtator", "ncbi-disease/pubtator/NCBItestset_corpus.txt", 100, {"Disease": 960}, {}),
        (
            "pubtator",
            "bc5cdr/pubtator/CDR_TestSet.PubTator.txt",
            500,
            {"Chemical": 5385, "Disease": 4424},
            {"relation_line": 1066},
        ),
        (
            "bioc",
            "bc5cdr/bioc/CDR_TestSet.BioC.xml",
            500,
            {"Chemical": 5385, "Disease": 4424},
            {"relation_line": 1066, "composite_part": 119},
        ),
        (
            "bioc",
            "bc5cdr/bioc/CDR_TrainingSet.BioC.xml",
            500,
            {"Chemical": 5203, "Disease": 4182},
            {"relation_line": 1038, "composite_part": 185},
        ),
        ("iob", "bc5cdr/BC5CDR-IOB/test.tsv", 4797, {"Chemical": 5385, "Disease": 4424}, {}),
        (
            "bc2gm",
            "bc2gm/original/train/train.in",
            15000,
            {"Gene": 18265 - 8},
            {"overlapping_mention": 7, "text_mismatch": 1},
        ),
        ("bc2gm", "bc2gm/original/test/test.in", 5000, {"Gene": 6331 - 6}, {"overlapping_mention": 6}),
        ("iob", "bc2gm/BC2GM-IOB/test.tsv", 5038, {"Gene": 6325}, {}),
        (
            "iob",
            "jnlpba/JNLPBA-IOB/test.tsv",
            404,
            {"protein": 5067, "DNA": 1056, "RNA": 118, "cell_type": 1921, "cell_line": 500},
            {},
        ),
    ],
)
def test_real_corpus_counts(format, path, documents, mentions, rules):
    _, report = read_all(format, CORPORA / path, level="document")
    assert report.documents == documents
    assert dict(report.mentions) == mentions
    for rule, count in rules.items():
        assert report.count(rule) == count, rule
    assert set(report.excluded_mentions()) <= set(rules)
