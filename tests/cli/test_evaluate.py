from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bioselecttune.cli import app
from spacy_bioselecttune.cli.annotate import read_texts
from spacy_bioselecttune.cli.evaluate import evaluate, load_pipeline
from spacy_bioselecttune.engine import generate as generate_module
from spacy_bioselecttune.engine.answer_format import ANSWER_CUE, TEXT_CUE, answer_for_record
from spacy_bioselecttune.engine.metrics import score_records
from spacy_bioselecttune.engine.records import Entity, Record

CONFIG = Path(__file__).parents[2] / "configs" / "bioselecttune_ner.cfg"


class ScriptedGenerator:
    """Answers each sentence from a fixed table; unknown sentences get an unparsable answer."""

    answers: dict = {}
    settings: dict = {}
    resolved_decoding = "scripted"

    def __init__(self, **settings) -> None:
        ScriptedGenerator.settings = settings
        self.times = generate_module.DecodeTimes()

    @property
    def model(self) -> None:
        return None

    def generate(self, prompts: Sequence[str]) -> List[str]:
        texts = [prompt.split(TEXT_CUE, 1)[1][: -len(ANSWER_CUE)] for prompt in prompts]
        return [ScriptedGenerator.answers.get(text, "no idea") for text in texts]


@pytest.fixture
def scripted(monkeypatch, fixture_records):
    monkeypatch.setattr(generate_module, "Generator", ScriptedGenerator)
    answers = {r.text: answer_for_record(r) for r in fixture_records}
    # One wrong prediction: colorectal cancer is missed and a name not in the text is made up.
    answers[fixture_records[1].text] = '[{"entity": "Chemical", "name": "Aspirin"}, {"entity": "Disease", "name": "gout"}]'
    ScriptedGenerator.answers = answers
    return ScriptedGenerator


@pytest.fixture
def gold_path(fixture_records, tmp_path) -> Path:
    nlp = spacy.blank("en")
    docs = []
    for record in fixture_records:
        doc = nlp(record.text)
        doc.ents = [doc.char_span(e.start, e.end, e.label) for e in record.entities]
        docs.append(doc)
    joined = nlp(" ".join(r.text for r in fixture_records[2:]) + " Unknown text here.")
    offset = len(fixture_records[2].text) + 1
    joined.ents = [joined.char_span(e.start + offset, e.end + offset, e.label) for e in fixture_records[3].entities]
    docs.append(joined)
    path = tmp_path / "gold.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


def test_evaluate_scores_like_the_engine_metrics(scripted, gold_path, fixture_records, tmp_path):
    nlp = load_pipeline(CONFIG, base_model="/not/loaded", labels=["Disease", "Chemical"])
    run = evaluate(nlp, gold_path, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    predicted = list(fixture_records)
    predicted[1] = Record(predicted[1].id, predicted[1].text, (Entity(0, 7, "Chemical"),))
    expected = score_records(fixture_records, predicted).overall
    # the joined doc adds one more true positive pair (Cisplatin, nephrotoxicity)
    assert metrics["ents_p"] == pytest.approx((expected.tp + 2) / (expected.tp + expected.fp + 2))
    assert metrics["ents_r"] == pytest.approx((expected.tp + 2) / (expected.tp + expected.fn + 2))
    assert metrics["ents_per_type"]["Chemical"]["f"] == pytest.approx(1.0)
    assert metrics["docs"] == 5 and metrics["sentences"] == 4 + 3
    assert metrics["dropped_names"] == 1 and metrics["parse_failures"] == 1
    assert metrics["sentences_per_second"] > 0
    assert run.metrics == metrics
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| Disease |" in table and "| Unparsable answers | 1 |" in table
    assert (tmp_path / "out" / "per_label_f1.png").read_bytes()[:4] == b"\x89PNG"
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [line["doc"] for line in errors] == [1]
    assert errors[0]["false_negatives"] == [{"start": 28, "end": 45, "label": "Disease", "text": "colorectal cancer", "kind": "missed"}]
    assert errors[0]["false_positives"] == []
    sentence = fixture_records[1].text
    assert errors[0]["dropped_names"] == [{"start": 0, "end": len(sentence), "label": "Disease", "name": "gout"}]
    assert metrics["errors"]["false_negative"] == {"wrong_label": 0, "wrong_boundary": 0, "missed": 1}
    assert "| missed | 1 |" in table


def test_evaluate_loads_the_weights_before_the_clock_starts(scripted, gold_path, tmp_path, monkeypatch):
    events = []
    answer = ScriptedGenerator.generate
    monkeypatch.setattr(ScriptedGenerator, "model", property(lambda self: events.append("load")))
    monkeypatch.setattr(ScriptedGenerator, "generate", lambda self, prompts: events.append("generate") or answer(self, prompts))
    evaluate(load_pipeline(CONFIG, base_model="/not/loaded", labels=["Disease", "Chemical"]), gold_path, tmp_path / "out")
    assert events[0] == "load" and "generate" in events


def test_evaluate_reports_where_the_model_time_went(tiny_model_dir, gold_path, tmp_path):
    nlp = load_pipeline(None, base_model=str(tiny_model_dir), labels=["Disease", "Chemical"], device="cpu", batch_size=4)
    phases = evaluate(nlp, gold_path, tmp_path / "out").metrics["generation"]
    assert phases["batches"] >= 2 and phases["decode_steps"] > 0 and phases["prefill_seconds"] > 0
    assert phases["row_steps"] >= phases["decode_steps"]
    assert phases["decoding"] == "continuous"  # auto on a CPU
    report = (tmp_path / "out" / "metrics.md").read_text()
    assert "| Decode steps (ms per step) |" in report and "| Decoding loop | continuous |" in report


def test_evaluate_warm_up_runs_the_longest_docs_before_the_clock(tiny_model_dir, gold_path, tmp_path, monkeypatch):
    from spacy_bioselecttune.engine.generate import Generator

    def run(warm_up: int, name: str):
        nlp = load_pipeline(None, base_model=str(tiny_model_dir), labels=["Disease"], device="cpu", batch_size=2)
        return evaluate(nlp, gold_path, tmp_path / name, warm_up=warm_up).metrics

    cold = run(0, "cold")
    seen = []
    generate = Generator.generate
    monkeypatch.setattr(Generator, "generate", lambda self, prompts: seen.append(len(prompts)) or generate(self, prompts))
    warm = run(2, "warm")
    assert cold["warm_up_seconds"] is None and warm["warm_up_seconds"] > 0 and warm["warm_up_docs"] == 2
    assert warm["generation"]["batches"] == cold["generation"]["batches"]  # the warm-up's batches are forgotten
    assert seen[0] > 2  # the longest of the two-sentence gold docs came first
    assert warm["ents_f"] == cold["ents_f"] and warm["docs"] == cold["docs"]
    assert "| Warm-up before the clock: docs (s) | 2 (" in (tmp_path / "warm" / "metrics.md").read_text()


def test_evaluate_cli_on_a_saved_pipeline_with_limit(scripted, gold_path, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("bioselecttune_ner", config={"labels": ["Disease", "Chemical"], "base_model": "/not/loaded"})
    nlp.to_disk(tmp_path / "pipeline")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pipeline"), str(gold_path), "--output", str(tmp_path / "out"), "--limit", "2", "-b", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["docs"] == 2
    assert metrics["ents_per_type"]["Disease"]["r"] == pytest.approx(0.5)
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "pipeline"), str(gold_path), "--output", str(tmp_path / "all"), "--limit", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["docs"] == 5
    assert scripted.settings["batch_size"] == 64  # the component's default


def test_evaluate_cli_sets_the_model_batch_apart_from_the_pipe_batch(scripted, gold_path, tmp_path):
    args = ["evaluate", str(CONFIG), str(gold_path), "--output", str(tmp_path / "out"), "-m", "/not/loaded",
            "-l", "Disease,Chemical", "-b", "64", "--model-batch-size", "7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert scripted.settings["batch_size"] == 7
    assert scripted.settings["empty_answer_threshold"] is None  # plain greedy answers unless asked


def test_evaluate_cli_hands_the_empty_answer_threshold_to_the_generator(scripted, gold_path, tmp_path):
    args = ["evaluate", str(CONFIG), str(gold_path), "--output", str(tmp_path / "out"), "-m", "/not/loaded",
            "-l", "Disease,Chemical", "--empty-answer-threshold", "0.8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert scripted.settings["empty_answer_threshold"] == 0.8
    args[-1] = "1.5"
    assert CliRunner().invoke(app, args).exit_code != 0


def test_evaluate_prompts_the_gold_docs_sentences_where_they_are_marked(scripted, fixture_records, tmp_path):
    nlp = spacy.blank("en")
    joined = nlp(" ".join(r.text for r in fixture_records[:2]))
    joined[0].is_sent_start = True
    for token in joined[1:]:
        token.is_sent_start = False
    path = tmp_path / "one-sentence.spacy"
    DocBin(docs=[joined], attrs=["ORTH", "SENT_START"]).to_disk(path)
    pipeline = load_pipeline(CONFIG, base_model="/not/loaded", labels=["Disease", "Chemical"])
    gold = evaluate(pipeline, path, tmp_path / "gold").metrics
    assert gold["sentence_units"] == "gold" and gold["sentences"] == 1
    assert gold["parse_failures"] == 1  # the scripted model knows the two sentences, not the joined one
    own = evaluate(pipeline, path, tmp_path / "own", gold_sentences=False).metrics
    assert own["sentence_units"] == "pipeline" and own["sentences"] == 2 and own["parse_failures"] == 0
    assert "| Sentences | 1 (the gold docs' own) |" in (tmp_path / "gold" / "metrics.md").read_text()


def test_evaluate_load_pipeline_errors(tmp_path):
    (tmp_path / "pipeline").mkdir()
    spacy.blank("en").to_disk(tmp_path / "pipeline")
    with pytest.raises(ValueError, match=r"\[E010\].*adapter"):
        load_pipeline(tmp_path / "pipeline", adapter="x")
    with pytest.raises(ValueError, match=r"\[E303\]"):
        load_pipeline(tmp_path)
    with pytest.raises(ValueError, match=r"\[E304\]"):
        evaluate(spacy.load(tmp_path / "pipeline"), tmp_path / "gold.spacy", tmp_path / "out")


def test_annotate_cli_writes_html_and_jsonl(scripted, fixture_records, tmp_path):
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"text": r.text}) + "\n" for r in fixture_records) + "\n", encoding="utf8")
    html, jsonl = tmp_path / "out.html", tmp_path / "ents.jsonl"
    result = CliRunner().invoke(
        app, ["annotate", str(source), str(html), "--base-model", "/not/loaded", "--labels", "Disease,Chemical", "--jsonl", str(jsonl), "--limit", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "Cystic fibrosis" in html.read_text() and "<html" in html.read_text()
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3
    assert records[0]["entities"] == [{"start": 0, "end": 15, "label": "Disease", "text": "Cystic fibrosis"}]


def test_annotate_read_texts_formats_and_errors(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("one\n\ntwo\r\nthree\n", encoding="utf8")
    assert read_texts(txt) == ["one", "two", "three"]
    assert read_texts(txt, limit=2) == ["one", "two"]
    bad = tmp_path / "a.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n', encoding="utf8")
    with pytest.raises(ValueError, match=r"\[E007\].*line 2"):
        read_texts(bad)
    with pytest.raises(ValueError, match=r"\[E305\]"):
        read_texts(tmp_path / "a.csv")


def test_evaluate_llm_config_matches_the_component_config(scripted, gold_path, tmp_path):
    settings = {"base_model": "/not/loaded", "labels": ["Disease", "Chemical"], "device": "cpu"}
    llm_nlp = load_pipeline(CONFIG.with_name("llm_ner.cfg"), **settings)
    assert llm_nlp.get_pipe("llm").task.labels == ("Disease", "Chemical")
    assert llm_nlp.get_pipe("llm")._model.base_model == "/not/loaded"
    by_llm = evaluate(llm_nlp, gold_path, tmp_path / "llm").metrics
    by_component = evaluate(load_pipeline(CONFIG, **settings), gold_path, tmp_path / "component").metrics
    timings = ("seconds", "generation")
    assert {k: v for k, v in by_llm.items() if k not in timings and "per_second" not in k} == {
        k: v for k, v in by_component.items() if k not in timings and "per_second" not in k
    }
