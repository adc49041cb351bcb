"""The `convert` and `convert-dataset` commands: DocBin, instruction JSONL and report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bioselecttune.cli import app
from spacy_bioselecttune.cli.convert import convert, convert_dataset
from spacy_bioselecttune.engine.answer_format import answer_for_record, build_prompt
from spacy_bioselecttune.engine.records import Entity, Record

FIXTURES = Path(__file__).parents[1] / "fixtures" / "corpora"
CORPORA = Path(__file__).parents[2] / ".." / "shared" / "corpora"


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def test_convert_writes_docbin_jsonl_and_report(tmp_path):
    with pytest.warns(UserWarning, match="W200"):
        result = convert("pubtator", FIXTURES / "small.pubtator.txt", tmp_path, "mini", "test", labels=["Chemical", "Disease"])
    assert result.docbin == tmp_path / "mini-test.spacy"
    lines = read_jsonl(result.jsonl)
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(result.docbin).get_docs(nlp.vocab))
    assert [line["id"] for line in lines] == [doc.user_data["id"] for doc in docs]
    assert all(line["id"].startswith("mini/test/") for line in lines)
    for line, doc in zip(lines, docs):
        assert line["text"] == doc.text
        assert line["entities"] == [[e.start_char, e.end_char, e.label_] for e in doc.ents]
        record = Record(line["id"], line["text"], tuple(Entity(*e) for e in line["entities"]))
        assert line["prompt"] == build_prompt(line["text"], ["Chemical", "Disease"])
        assert line["answer"] == answer_for_record(record)
        assert line["positive"] is bool(line["entities"])
        assert line["labels"] == ["Chemical", "Disease"]
    assert any(not line["positive"] for line in lines)
    assert all(len(list(doc.sents)) == 1 for doc in docs)  # each record is one sentence: the unit to prompt
    report = json.loads(result.report_path.read_text())
    assert report["documents"] == 2 and report["records"] == len(lines)
    assert report["rules"]["duplicate_document"]["count"] == 1
    assert report["rules"]["text_mismatch"]["examples"]
    assert report["mentions"] == {"Chemical": 2, "Disease": 5}
    assert report["docs"]["entities"] == 7


def test_convert_cli_options(tmp_path):
    runner = CliRunner()
    args = ["convert", "iob", str(FIXTURES / "small.iob.tsv"), str(tmp_path), "--name", "mini", "--split", "train"]
    args += ["--labels", "Gene,Chemical", "--label-map", "GENE=Gene", "--level", "document", "--limit", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = read_jsonl(tmp_path / "mini-train.jsonl")
    assert len(lines) == 1 and lines[0]["labels"] == ["Gene", "Chemical"]
    assert lines[0]["entities"] == [[0, 10, "Chemical"]]
    report = json.loads((tmp_path / "mini-train.report.json").read_text())
    assert report["rules"]["beyond_limit"]["count"] == 1
    assert report["rules"]["label_not_kept"]["count"] == 1
    assert "mini-train.spacy" in result.output


def test_convert_cli_reports_corrupted_input(tmp_path):
    result = CliRunner().invoke(
        app, ["convert", "iob", str(FIXTURES / "broken" / "latin1.iob.tsv"), str(tmp_path), "-n", "x", "-s", "test"]
    )
    assert result.exit_code == 1
    assert "[E200]" in result.output and "latin1.iob.tsv line 2" in result.output


@pytest.mark.skipif(not CORPORA.is_dir(), reason=f"source corpora not found at {CORPORA}")
def test_convert_dataset_ncbi_disease_reproduces_the_verified_counts(tmp_path):
    converted = {c.docbin.stem.rsplit("-", 1)[1]: c for c in convert_dataset("ncbi-disease", CORPORA, tmp_path, eval_limit=0, train_limit=50)}
    assert sorted(converted) == ["dev", "test", "train"]
    test = converted["test"].report
    assert test.documents == 940 and dict(test.mentions) == {"Disease": 960}
    assert converted["dev"].report.documents == 923 and dict(converted["dev"].report.mentions) == {"Disease": 787}
    assert converted["train"].report.documents == 50
    lines = read_jsonl(tmp_path / "ncbi-disease-test.jsonl")
    assert len(lines) == 940 and sum(len(line["entities"]) for line in lines) == 960
    assert lines[0]["id"] == "ncbi-disease/test/000000"


def test_document_level_docs_keep_the_sources_sentences(tmp_path):
    result = convert("iob", FIXTURES / "small.iob.tsv", tmp_path, "mini", "test", level="document")
    docs = list(DocBin().from_disk(result.docbin).get_docs(spacy.blank("en").vocab))
    assert [[sent.text for sent in doc.sents] for doc in docs] == [
        ["Famotidine causes acute delirium .", "No entities here ."],
        ["IL-2 gene expression and NF-kappa B activation"],
    ]
