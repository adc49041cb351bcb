from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

import pytest
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacy_bioselecttune.engine import generate as generate_module
from spacy_bioselecttune.engine.answer_format import ANSWER_CUE, TEXT_CUE
from spacy_bioselecttune.pipeline.component import BioSelectTuneNER
from spacy_bioselecttune.pipeline.scorer import DROPPED_NAMES_KEY


def prompt_text(prompt: str) -> str:
    """The text a prompt asks about."""
    return prompt.split(TEXT_CUE, 1)[1][: -len(ANSWER_CUE)]


class FakeGenerator:
    """Stands in for the engine's Generator: answers each prompt's text with `answer(text)`."""

    answer: Callable[[str], str] = staticmethod(lambda text: "[]")
    calls: List[List[str]] = []

    def __init__(self, **settings) -> None:
        self.settings = settings

    @property
    def model(self) -> None:
        return None

    def generate(self, prompts: Sequence[str]) -> List[str]:
        FakeGenerator.calls.append(list(prompts))
        return [FakeGenerator.answer(prompt_text(prompt)) for prompt in prompts]


@pytest.fixture
def fake_generator(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(generate_module, "Generator", FakeGenerator)
    FakeGenerator.calls = []
    FakeGenerator.answer = staticmethod(lambda text: "[]")
    return FakeGenerator


def names(*pairs) -> str:
    return json.dumps([{"entity": label, "name": name} for label, name in pairs], ensure_ascii=False)


def ents_of(doc) -> list:
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def gold_of(record) -> list:
    return [(e.start, e.end, e.label) for e in sorted(record.entities)]


def test_component_add_pipe_is_found_by_entry_point_and_loads_nothing():
    script = (
        "import spacy; nlp = spacy.blank('en'); pipe = nlp.add_pipe('bioselecttune_ner');"
        "print(pipe.labels, pipe.base_model, pipe.adapter, pipe.alignment_mode, pipe.is_loaded)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[0] == "('Disease', 'Chemical', 'Gene') smollm2-135m auto expand False"


def test_component_rejects_bad_settings():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=r"\[E010\].*alignment_mode"):
        nlp.add_pipe("bioselecttune_ner", config={"alignment_mode": "loose"})
    with pytest.raises(ValueError, match=r"\[E005\]"):
        nlp.add_pipe("bioselecttune_ner", config={"labels": []})
    with pytest.raises(ValueError, match=r"\[E010\].*batch_size"):
        nlp.add_pipe("bioselecttune_ner", config={"batch_size": 0})
    with pytest.raises(ValueError, match=r"\[E010\].*decoding.*continuous"):
        nlp.add_pipe("bioselecttune_ner", config={"decoding": "graphs"})
    with pytest.raises(ValueError, match=r"\[E010\].*empty_answer_threshold"):
        nlp.add_pipe("bioselecttune_ner", config={"empty_answer_threshold": 0.0})


def test_component_memorized_model_gives_gold_ents(memorized_model_dir, fixture_records, labels):
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"labels": labels, "base_model": str(memorized_model_dir), "device": "cpu"})
    for record in fixture_records:
        doc = nlp(record.text)
        assert ents_of(doc) == gold_of(record)
        assert doc.user_data["bioselecttune"]["sentences"] == 1
        assert doc.user_data["bioselecttune"]["parse_failures"] == 0


@pytest.mark.parametrize("batch_size,decoding", [(1, "dynamic"), (3, "dynamic"), (3, "continuous")])
def test_component_pipe_maps_multi_sentence_docs_back(memorized_model_dir, fixture_records, labels, batch_size, decoding):
    nlp = spacy.blank("en")
    config = {"labels": labels, "base_model": str(memorized_model_dir), "device": "cpu", "decoding": decoding, "batch_size": 2}
    pipe = nlp.add_pipe("bioselecttune_ner", config=config)
    joined = " ".join(r.text for r in fixture_records)
    texts = [r.text for r in fixture_records] + [joined, "  " + fixture_records[3].text + "\n" + fixture_records[1].text]
    expected = [gold_of(r) for r in fixture_records]
    offset, joined_gold = 0, []
    for record in fixture_records:
        joined_gold += [(s + offset, e + offset, label) for s, e, label in gold_of(record)]
        offset += len(record.text) + 1
    second = 2 + len(fixture_records[3].text) + 1
    expected += [joined_gold, [(s + 2, e + 2, l) for s, e, l in gold_of(fixture_records[3])] + [(s + second, e + second, l) for s, e, l in gold_of(fixture_records[1])]]
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    assert [ents_of(doc) for doc in docs] == expected
    assert [doc.text for doc in docs] == texts
    assert pipe.counts["sentences"] == 4 + 4 + 2
    assert pipe.generator.decoding == decoding


def test_component_uses_sentences_set_by_an_earlier_pipe(fake_generator):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("bioselecttune_ner")
    nlp("Aspirin helps! no doubt.")
    assert [prompt_text(p) for p in fake_generator.calls[0]] == ["Aspirin helps!", "no doubt."]


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_component_empty_docs_make_no_model_call(text):
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"base_model": "/nonexistent/model"})
    doc = nlp(text)
    assert doc.text == text and len(doc.ents) == 0
    assert doc.user_data["bioselecttune"]["sentences"] == 0


def test_component_garbage_answers_give_no_ents_and_are_counted(fake_generator):
    fake_generator.answer = staticmethod(lambda text: "I think the answer is aspirin")
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("bioselecttune_ner")
    with pytest.warns(UserWarning, match=r"\[W001\]"):
        doc = nlp("Aspirin helps. Cisplatin harms.")
    assert len(doc.ents) == 0
    # the shipped adapter's label lists: two prompts for each of the two sentences
    assert doc.user_data["bioselecttune"]["prompts"] == 4
    assert doc.user_data["bioselecttune"]["parse_failures"] == 4
    assert pipe.counts["parse_failures"] == 4


def test_component_hallucinated_names_are_dropped_and_counted(fake_generator):
    fake_generator.answer = staticmethod(lambda text: names(("Chemical", "Aspirin"), ("Disease", "gout")))
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner")
    with pytest.warns(UserWarning, match=r"\[W002\]"):
        doc = nlp("Aspirin helps.")
    assert ents_of(doc) == [(0, 7, "Chemical")]
    assert doc.user_data["bioselecttune"]["dropped_names"] == 1
    assert doc.user_data[DROPPED_NAMES_KEY] == [{"start": 0, "end": 14, "label": "Disease", "name": "gout"}]


@pytest.mark.parametrize(
    "text,name",
    [
        ("Le syndrome de Guillain\u2013Barr\u00e9 est rare.", "syndrome de Guillain\u2013Barr\u00e9"),
        ("\u7cd6\u5c3f\u75c5 and \U0001f9ec aspirin use.", "aspirin"),
        ('She wrote [{"entity": "Disease", "name": "flu"}] and "gout".', "gout"),
        ("Caf\u0065\u0301 intake and t\u00fcmor growth.", "t\u00fcmor"),
    ],
)
def test_component_odd_text_gives_spans_matching_the_text(fake_generator, text, name):
    fake_generator.answer = staticmethod(lambda sentence: names(("Disease", name)))
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner")
    doc = nlp(text)
    assert doc.text == text
    assert [ent.text for ent in doc.ents] == [name]
    assert all(text[ent.start_char : ent.end_char] == ent.text for ent in doc.ents)


def test_component_long_doc_is_split_within_the_sentence_cap(fake_generator):
    fake_generator.answer = staticmethod(lambda text: names(("Chemical", "aspirin")) if "aspirin" in text else "[]")
    sentence = "The patients took aspirin and recovered after many weeks of careful observation in the clinic. "
    text = sentence * 520 + "x" * 3000
    assert len(text) > 50_000
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"max_sentence_chars": 1000, "adapter": None})
    doc = nlp(text)
    prompts = [prompt_text(p) for call in fake_generator.calls for p in call]
    assert len(fake_generator.calls) == 1
    assert max(len(p) for p in prompts) <= 1000
    assert len(doc.ents) == 520
    assert all(ent.text == "aspirin" == text[ent.start_char : ent.end_char] for ent in doc.ents)


def test_component_keeps_existing_ents_and_counts_overlaps(fake_generator):
    fake_generator.answer = staticmethod(lambda text: names(("Disease", "colorectal cancer"), ("Chemical", "Aspirin")))
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner")
    doc = nlp.make_doc("Aspirin reduced colorectal cancer.")
    doc.ents = [doc.char_span(16, 26, "Organ")]
    with pytest.warns(UserWarning, match=r"\[W300\]"):
        doc = nlp(doc)
    assert ents_of(doc) == [(0, 7, "Chemical"), (16, 26, "Organ")]
    assert doc.user_data["bioselecttune"]["overlapping_spans"] == 1


@pytest.mark.parametrize("mode,expected", [("expand", [(0, 4, "Gene")]), ("strict", []), ("contract", [])])
def test_component_alignment_mode_for_names_inside_a_token(fake_generator, mode, expected):
    fake_generator.answer = staticmethod(lambda text: names(("Gene", "IL")))
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"alignment_mode": mode})
    if expected:
        doc = nlp("IL-6 was given.")
    else:
        with pytest.warns(UserWarning, match=r"\[W300\].*does not map to tokens"):
            doc = nlp("IL-6 was given.")
    assert ents_of(doc) == expected
    assert doc.user_data["bioselecttune"]["unaligned_spans"] == (0 if expected else 1)


def test_component_missing_adapter_is_a_clear_error():
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"adapter": "/no/such/adapter"})
    with pytest.raises(FileNotFoundError, match=r"\[E002\].*/no/such/adapter"):
        nlp("Aspirin helps.")


def test_component_unknown_base_model_is_a_clear_error(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"base_model": "no-such-model-anywhere"})
    with pytest.raises(OSError, match=r"\[E001\].*no-such-model-anywhere"):
        nlp("Aspirin helps.")


def test_component_checks_adapter_labels_and_format(fake_generator, lora_adapter_dir, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", name="subset", config={"labels": ["Disease"], "adapter": str(lora_adapter_dir)})
    nlp.add_pipe("bioselecttune_ner", name="unseen", config={"labels": ["Gene"], "adapter": str(lora_adapter_dir)})
    nlp.get_pipe("subset").load()
    with pytest.raises(ValueError, match=r"\[E003\].*Gene"):
        nlp.get_pipe("unseen").load()
    old = shutil.copytree(lora_adapter_dir, tmp_path / "old")
    (old / "bioselecttune.json").write_text(json.dumps({"format_version": 0, "labels": ["Disease"]}))
    pipe = nlp.add_pipe("bioselecttune_ner", name="old", config={"labels": ["Disease"], "adapter": str(old)})
    with pytest.raises(ValueError, match=r"\[E004\]"):
        pipe.load()


def test_component_to_disk_round_trip_copies_adapter_not_base(memorized_model_dir, fixture_records, labels, adapter_maker, tmp_path):
    adapter = adapter_maker(memorized_model_dir, tmp_path / "lora")
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "bioselecttune_ner",
        config={"labels": labels, "base_model": str(memorized_model_dir), "adapter": str(adapter), "device": "cpu"},
    )
    texts = [r.text for r in fixture_records] + [" ".join(r.text for r in fixture_records)]
    before = [ents_of(doc) for doc in nlp.pipe(texts)]
    assert before[:4] == [gold_of(r) for r in fixture_records]
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(adapter)
    saved = {p.relative_to(tmp_path / "pipeline").as_posix() for p in (tmp_path / "pipeline").rglob("*") if p.is_file()}
    assert "bioselecttune_ner/adapter/adapter_model.safetensors" in saved
    assert "bioselecttune_ner/adapter/bioselecttune.json" in saved
    component_files = {p for p in saved if p.startswith("bioselecttune_ner/")}
    assert component_files == {"bioselecttune_ner/cfg"} | {p for p in saved if p.startswith("bioselecttune_ner/adapter/")}
    assert not any(Path(p).name in ("model.safetensors", "pytorch_model.bin") or p.endswith(".gguf") for p in saved)
    loaded = spacy.load(tmp_path / "pipeline")
    pipe = loaded.get_pipe("bioselecttune_ner")
    assert isinstance(pipe, BioSelectTuneNER) and pipe.is_loaded
    assert Path(pipe.adapter) == tmp_path / "pipeline" / "bioselecttune_ner" / "adapter"
    assert [ents_of(doc) for doc in loaded.pipe(texts)] == before


def test_component_to_disk_without_adapter_and_missing_settings(tiny_model_dir, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"base_model": str(tiny_model_dir), "device": "cpu"})
    nlp.to_disk(tmp_path / "pipeline")
    settings = json.loads((tmp_path / "pipeline" / "bioselecttune_ner" / "cfg").read_text())
    assert settings["adapter"] is None and settings["base_model"] == str(tiny_model_dir)
    assert spacy.load(tmp_path / "pipeline").get_pipe("bioselecttune_ner").adapter is None
    (tmp_path / "pipeline" / "bioselecttune_ner" / "cfg").unlink()
    with pytest.raises(FileNotFoundError, match=r"\[E302\]"):
        spacy.load(tmp_path / "pipeline")


@pytest.mark.slow
def test_component_real_model_gives_spans_that_slice_the_text():
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"labels": ["Disease"], "adapter": None, "device": "cpu", "max_new_tokens": 48})
    texts = [
        "Cystic fibrosis is a genetic disease.\nPatients with type 2 diabetes had \u201cmild\u201d neuropathy.",
        "Aspirin reduced the risk of colorectal cancer in 50% of cases (p < 0.05).",
    ]
    docs = list(nlp.pipe(texts, batch_size=2))
    for text, doc in zip(texts, docs):
        assert doc.text == text
        assert all(text[ent.start_char : ent.end_char] == ent.text and ent.label_ == "Disease" for ent in doc.ents)
    assert nlp.get_pipe("bioselecttune_ner").counts["sentences"] == 3


def test_component_to_bytes_round_trip_carries_the_adapter(memorized_model_dir, fixture_records, labels, adapter_maker, tmp_path):
    adapter = adapter_maker(memorized_model_dir, tmp_path / "lora")
    config = {"labels": labels, "base_model": str(memorized_model_dir), "adapter": str(adapter), "device": "cpu"}
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config=config)
    data = nlp.to_bytes()
    shutil.rmtree(adapter)
    fresh = spacy.blank("en")
    fresh.add_pipe("bioselecttune_ner", config=config)
    fresh.from_bytes(data)
    pipe = fresh.get_pipe("bioselecttune_ner")
    assert pipe.is_loaded and (Path(pipe.adapter) / "adapter_model.safetensors").is_file()
    assert [ents_of(doc) for doc in fresh.pipe(r.text for r in fixture_records)] == [gold_of(r) for r in fixture_records]


def test_component_counts_every_kind_per_doc_and_in_total(fake_generator):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("bioselecttune_ner", config={"adapter": None})
    docs = list(nlp.pipe(["One. Two.", "", "Three."]))
    assert [doc.user_data["bioselecttune"] for doc in docs] == [
        {"sentences": 2, "prompts": 2, "parse_failures": 0, "dropped_names": 0, "overlapping_spans": 0, "unaligned_spans": 0},
        {"sentences": 0, "prompts": 0, "parse_failures": 0, "dropped_names": 0, "overlapping_spans": 0, "unaligned_spans": 0},
        {"sentences": 1, "prompts": 1, "parse_failures": 0, "dropped_names": 0, "overlapping_spans": 0, "unaligned_spans": 0},
    ]
    assert pipe.counts["sentences"] == 3
    assert len(fake_generator.calls) == 1


SHORT_SENTENCE_NLP = spacy.blank("en")
SHORT_SENTENCE_NLP.add_pipe("bioselecttune_ner", config={"max_sentence_chars": 20})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=st.sampled_from(list("ab A.-\n\u00e9\u4e2d\"[]{}")), max_size=60),
    picks=st.lists(st.tuples(st.integers(0, 59), st.integers(1, 8)), max_size=4),
)
def test_component_spans_always_slice_the_unchanged_text(fake_generator, text, picks):
    fake_generator.answer = staticmethod(lambda sentence: names(*[("Disease", sentence[i : i + n]) for i, n in picks]))
    doc = SHORT_SENTENCE_NLP(text)
    assert doc.text == text
    assert all(text[ent.start_char : ent.end_char] == ent.text for ent in doc.ents)
    assert all(a.end <= b.start for a, b in zip(doc.ents, doc.ents[1:]))


@pytest.fixture
def union_adapter_dir(lora_adapter_dir, tmp_path) -> Path:
    """An adapter whose metadata says it was trained on three corpora's label lists."""
    adapter = shutil.copytree(lora_adapter_dir, tmp_path / "union")
    metadata = json.loads((adapter / "bioselecttune.json").read_text())
    metadata.update(labels=["Disease", "Chemical", "Gene"], label_sets=[["Disease"], ["Chemical", "Disease"], ["Gene"]])
    (adapter / "bioselecttune.json").write_text(json.dumps(metadata))
    return adapter


def test_component_prompts_in_the_adapters_trained_label_lists(fake_generator, union_adapter_dir):
    text = "Aspirin eased the migraine. BRCA1 was mutated."
    fake_generator.answer = staticmethod(
        lambda sentence: names(("Chemical", "Aspirin"), ("Disease", "migraine"), ("Gene", "BRCA1"))
    )
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("bioselecttune_ner", config={"adapter": str(union_adapter_dir)})
    assert pipe.prompt_groups == [("Chemical", "Disease"), ("Gene",)]
    doc = nlp(text)
    asked = [call[0].split(" from the text")[0].split("types ")[1] for call in fake_generator.calls]
    assert asked == ["Chemical, Disease", "Gene"] and all(len(call) == 2 for call in fake_generator.calls)
    assert [(ent.text, ent.label_) for ent in doc.ents] == [("Aspirin", "Chemical"), ("migraine", "Disease"), ("BRCA1", "Gene")]
    assert doc.user_data["bioselecttune"]["sentences"] == 2 and doc.user_data["bioselecttune"]["prompts"] == 4

    fake_generator.calls = []
    only_chemical = nlp.add_pipe("bioselecttune_ner", name="chemical", config={"adapter": str(union_adapter_dir), "labels": ["Chemical"]})
    doc = only_chemical(nlp.make_doc(text))
    assert len(fake_generator.calls) == 1 and "types Chemical, Disease from" in fake_generator.calls[0][0]
    assert [(ent.text, ent.label_) for ent in doc.ents] == [("Aspirin", "Chemical")]

    fake_generator.calls = []
    joint = nlp.add_pipe("bioselecttune_ner", name="joint", config={"adapter": str(union_adapter_dir), "prompts": "joint"})
    doc = joint(nlp.make_doc(text))
    assert len(fake_generator.calls) == 1 and "types Disease, Chemical, Gene from" in fake_generator.calls[0][0]
    assert len(doc.ents) == 3
    with pytest.raises(ValueError, match=r"\[E010\].*prompts"):
        nlp.add_pipe("bioselecttune_ner", name="bad", config={"prompts": "each"})


def test_component_refuses_an_adapter_trained_on_another_registered_base(fake_generator, union_adapter_dir):
    metadata = json.loads((union_adapter_dir / "bioselecttune.json").read_text())
    (union_adapter_dir / "bioselecttune.json").write_text(json.dumps({**metadata, "base_model": "smollm2-135m"}))
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", name="same", config={"adapter": str(union_adapter_dir)}).load()
    pipe = nlp.add_pipe("bioselecttune_ner", name="other", config={"adapter": str(union_adapter_dir), "base_model": "gemma3-270m"})
    with pytest.raises(ValueError, match=r"\[E011\].*smollm2-135m.*gemma3-270m"):
        pipe.load()
