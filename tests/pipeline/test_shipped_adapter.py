"""The adapter shipped as package data, and the component's "auto" adapter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy

from spacy_bioselecttune.engine.answer_format import FORMAT_VERSION
from spacy_bioselecttune.pipeline.component import PACKAGE_ADAPTERS, SHIPPED_ADAPTERS, resolve_adapter

SHIPPED = PACKAGE_ADAPTERS / SHIPPED_ADAPTERS["smollm2-135m"]
NCBI_TEST = Path(__file__).parents[2] / ".." / "shared" / "corpora" / "ncbi-disease" / "NCBI-disease-IOB" / "test.tsv"


def test_shipped_adapter_is_small_bf16_and_documents_itself():
    from safetensors import safe_open

    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 16 * 2**20
    metadata = json.loads((SHIPPED / "bioselecttune.json").read_text())
    assert metadata["format_version"] == FORMAT_VERSION and metadata["base_model"] == "smollm2-135m"
    assert set(metadata["labels"]) == {"Disease", "Chemical", "Gene"}
    assert sorted(map(tuple, metadata["label_sets"])) == [("Chemical", "Disease"), ("Disease",), ("Gene",)]
    assert metadata["weights_dtype"] == "bfloat16" and metadata["train_config"]["lora_r"] > 0
    with safe_open(str(SHIPPED / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert names and all("lora_" in name for name in names)
        assert {str(weights.get_tensor(name).dtype) for name in names} == {"torch.bfloat16"}
    for corpus in ("ncbi-disease", "bc5cdr", "bc2gm"):
        assert json.loads((SHIPPED / "records" / corpus / "metrics.json").read_text())["ents_f"] > 0


def test_auto_adapter_is_the_shipped_one_for_its_base_model_only(tmp_path):
    assert resolve_adapter("auto", "smollm2-135m") == SHIPPED
    assert resolve_adapter("auto", "gemma3-270m") is None
    assert resolve_adapter("auto", str(tmp_path)) is None
    assert resolve_adapter(SHIPPED.name) == SHIPPED
    assert resolve_adapter(None, "smollm2-135m") is None


def test_default_component_asks_in_the_shipped_label_lists_and_rejects_unseen_labels():
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("bioselecttune_ner")
    assert pipe.adapter == "auto" and not pipe.is_loaded
    assert pipe.prompt_groups == [("Chemical", "Disease"), ("Gene",)]
    unseen = nlp.add_pipe("bioselecttune_ner", name="unseen", config={"labels": ["protein"]})
    with pytest.raises(ValueError, match=r"\[E003\].*smollm2-135m-union.*protein"):
        unseen.load()


@pytest.mark.slow
@pytest.mark.skipif(not NCBI_TEST.is_file(), reason=f"NCBI-disease test split not found at {NCBI_TEST}")
def test_shipped_adapter_tags_diseases_the_bare_model_misses():
    """On 30 NCBI-disease test sentences the bare base model scores F1 0 (it never writes the list format)."""
    from spacy_bioselecttune.engine.corpora import read_records
    from spacy_bioselecttune.engine.metrics import score_records
    from spacy_bioselecttune.engine.records import Entity, Record

    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"labels": ["Disease"], "device": "cpu"})
    gold = [record for _, record in zip(range(30), read_records("iob", NCBI_TEST))]
    predicted = [
        Record(record.id, doc.text, tuple(sorted(Entity(e.start_char, e.end_char, e.label_) for e in doc.ents)))
        for record, doc in zip(gold, nlp.pipe(record.text for record in gold))
    ]
    assert score_records(gold, predicted).overall.f1 > 0.3
