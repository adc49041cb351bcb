"""The `bioselecttune.Corpus.v1` reader: registered, configurable, yielding gold Examples."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import spacy
from spacy.util import registry
from thinc.api import Config

from spacy_bioselecttune.pipeline.docs import records_to_docbin
from spacy_bioselecttune.pipeline.readers import BioCorpus, create_corpus_reader
from spacy_bioselecttune.engine.corpora import read_records

FIXTURES = Path(__file__).parents[1] / "fixtures" / "corpora"


def gold(examples):
    return [[(e.text, e.label_) for e in example.reference.ents] for example in examples]


def test_reader_is_registered_by_name():
    assert registry.readers.get("bioselecttune.Corpus.v1") is create_corpus_reader


def test_reader_resolves_from_a_training_config():
    config = Config().from_str(
        f"""
        [corpora]
        [corpora.train]
        @readers = "bioselecttune.Corpus.v1"
        path = "{FIXTURES / 'small.pubtator.txt'}"
        format = "pubtator"
        labels = ["Disease"]
        level = "document"
        """
    )
    corpus = registry.resolve(config)["corpora"]["train"]
    assert isinstance(corpus, BioCorpus)
    nlp = spacy.blank("en")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        examples = list(corpus(nlp))
    assert len(examples) == 2
    assert gold(examples)[0] == [("delirium", "Disease"), ("Ovarian and breast cancer", "Disease"), ("delirium", "Disease")]
    assert examples[0].predicted.text == examples[0].reference.text
    assert not examples[0].predicted.ents


def test_reader_reads_docbins_with_a_limit(tmp_path):
    nlp = spacy.blank("en")
    records = list(read_records("iob", FIXTURES / "small.iob.tsv"))
    path = tmp_path / "small.spacy"
    records_to_docbin(nlp, records).to_disk(path)
    examples = list(create_corpus_reader(path, limit=2)(nlp))
    assert [e.reference.user_data["id"] for e in examples] == [r.id for r in records[:2]]
    assert gold(examples)[0] == [("Famotidine", "Chemical"), ("acute delirium", "Disease")]


def test_reader_label_map_and_sentence_level():
    nlp = spacy.blank("en")
    examples = list(create_corpus_reader(FIXTURES / "small.iob.tsv", format="iob", label_map={"GENE": "GeneOrProtein"})(nlp))
    assert gold(examples)[2] == [("IL-2 gene", "GeneOrProtein"), ("NF-kappa B", "GeneOrProtein")]


def test_reader_rejects_unknown_format_and_missing_file():
    with pytest.raises(ValueError, match="E210"):
        create_corpus_reader(FIXTURES / "small.iob.tsv", format="conll")
    with pytest.raises(FileNotFoundError, match="E214"):
        create_corpus_reader(FIXTURES / "absent.spacy")
