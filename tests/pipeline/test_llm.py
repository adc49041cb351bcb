from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import spacy
from spacy.util import load_config, load_model_from_config

from spacy_bioselecttune.pipeline.llm import BioSelectTuneHFModel, BioSelectTuneNERTask

CONFIGS = Path(__file__).parents[2] / "configs"


def llm_nlp(base_model: Path, labels, **model_settings):
    config = load_config(CONFIGS / "llm_ner.cfg")
    config["components"]["llm"]["task"]["labels"] = list(labels)
    config["components"]["llm"]["model"].update(base_model=str(base_model), device="cpu", **model_settings)
    return load_model_from_config(config, auto_fill=True)


def ents_of(doc) -> list:
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def test_llm_config_resolves_task_and_model_by_entry_point():
    script = (
        "import spacy; from spacy.util import load_config, load_model_from_config;"
        f"nlp = load_model_from_config(load_config({str(CONFIGS / 'llm_ner.cfg')!r}), auto_fill=True);"
        "pipe = nlp.get_pipe('llm');"
        "print(type(pipe.task).__name__, type(pipe._model).__name__, pipe.task.labels, pipe._model._generator)"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "BioSelectTuneNERTask BioSelectTuneHFModel ('Disease', 'Chemical', 'Gene') None"


def test_llm_route_gives_the_same_ents_as_the_component(memorized_model_dir, fixture_records, labels):
    texts = [r.text for r in fixture_records] + [" ".join(r.text for r in fixture_records), "", "   "]
    component_nlp = spacy.blank("en")
    component_nlp.add_pipe("bioselecttune_ner", config={"labels": labels, "base_model": str(memorized_model_dir), "device": "cpu"})
    expected = [ents_of(doc) for doc in component_nlp.pipe(texts, batch_size=3)]
    assert expected[0] == [(e.start, e.end, e.label) for e in fixture_records[0].entities]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nlp = llm_nlp(memorized_model_dir, labels)
    docs = list(nlp.pipe(texts, batch_size=3))
    assert [ents_of(doc) for doc in docs] == expected
    assert [doc.text for doc in docs] == texts
    assert docs[4].user_data["bioselecttune"]["sentences"] == 4
    assert ents_of(nlp(texts[1])) == expected[1]


def test_llm_task_prompts_one_per_sentence_with_the_doc_as_shard():
    nlp = spacy.blank("en")
    task = BioSelectTuneNERTask(["Disease"], max_sentence_chars=1000, alignment_mode="expand", scorer=lambda examples: {})
    doc = nlp.make_doc("Gout hurts. Flu spreads.")
    ((prompts, shards),) = list(task.generate_prompts([doc]))
    assert len(prompts) == 2 and prompts[1].endswith("Flu spreads.\nAnswer:\n")
    assert list(shards) == [doc]
    (annotated,) = list(task.parse_responses([shards], [['[{"entity": "Disease", "name": "Gout"}]', "garbage"]]))
    assert annotated is doc
    assert ents_of(doc) == [(0, 4, "Disease")]
    assert doc.user_data["bioselecttune"]["parse_failures"] == 1


def test_llm_task_asks_each_trained_label_list_and_keeps_only_the_requested_labels():
    nlp = spacy.blank("en")
    trained = [["Gene"], ["Chemical", "Disease"]]
    task = BioSelectTuneNERTask(["Disease", "Gene"], 1000, "expand", scorer=lambda examples: {}, label_groups=trained)
    assert task.groups == [("Chemical", "Disease"), ("Gene",)]
    doc = nlp.make_doc("BRCA1 binds. Aspirin eases gout.")
    ((prompts, shards),) = list(task.generate_prompts([doc]))
    assert len(prompts) == 4
    assert "Chemical, Disease" in prompts[0] and "Gene" not in prompts[0] and "Chemical" not in prompts[3]
    responses = ["[]", '[{"entity": "Chemical", "name": "Aspirin"}, {"entity": "Disease", "name": "gout"}]',
                 '[{"entity": "Gene", "name": "BRCA1"}]', "[]"]
    (annotated,) = list(task.parse_responses([shards], [responses]))
    assert ents_of(annotated) == [(0, 5, "Gene"), (27, 31, "Disease")]
    assert annotated.user_data["bioselecttune"]["sentences"] == 2
    assert annotated.user_data["bioselecttune"]["prompts"] == 4


def test_llm_config_takes_label_groups(tmp_path):
    config = load_config(CONFIGS / "llm_ner.cfg")
    config["components"]["llm"]["task"]["label_groups"] = [["Gene"], ["Disease"], ["Chemical", "Disease"]]
    nlp = load_model_from_config(config, auto_fill=True)
    assert nlp.get_pipe("llm").task.groups == [("Chemical", "Disease"), ("Gene",)]


def test_llm_model_batches_prompts_of_many_docs_in_one_call(monkeypatch):
    calls = []

    class RecordingGenerator:
        def __init__(self, **settings):
            pass

        def generate(self, prompts):
            calls.append(list(prompts))
            return [f"answer {prompt}" for prompt in prompts]

    from spacy_bioselecttune.engine import generate as generate_module

    monkeypatch.setattr(generate_module, "Generator", RecordingGenerator)
    model = BioSelectTuneHFModel("smollm2-135m", None, "cpu", 4, 16, 8192)
    assert model([["a", "b"], [], ["c"]]) == [["answer a", "answer b"], [], ["answer c"]]
    assert calls == [["a", "b", "c"]]


def test_llm_task_rejects_a_bad_alignment_mode():
    with pytest.raises(ValueError, match=r"\[E010\]"):
        BioSelectTuneNERTask(["Disease"], 1000, "loose", scorer=lambda examples: {})
