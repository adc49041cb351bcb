from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.records import Record

SCRIPT = Path(__file__).parents[2] / "scripts" / "run_experiments.py"
# Block spaCy so the run proves the script needs the engine only.
WITHOUT_SPACY = "import runpy, sys; sys.modules['spacy'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def test_run_experiments_trains_and_scores_each_strategy_without_spacy(tmp_path, fixture_records, tiny_model_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    labels = ["Disease", "Chemical"]
    train = [Record(f"{r.id}-{copy}", r.text, r.entities) for copy in range(3) for r in fixture_records]
    train += [Record("negative", "Nothing to see here.", ())]
    (corpus / "tiny-train.jsonl").write_text("".join(instruction_line(r, labels) + "\n" for r in train))
    (corpus / "tiny-dev.jsonl").write_text("".join(instruction_line(r, labels) + "\n" for r in fixture_records))
    config = tmp_path / "train.cfg"
    config.write_text(f'[train]\nbase_model = "{tiny_model_dir}"\n# a comment\nmax_steps = 2\nbatch_size = 4\nlora_r = 4\nlora_alpha = 8\n'
                      'target_modules = ["q_proj", "v_proj"]\ncheckpoint_every = 0\n')
    out = tmp_path / "out"
    command = [sys.executable, "-c", WITHOUT_SPACY, str(SCRIPT), "--corpus", str(corpus), "--output", str(out),
               "--datasets", "tiny", "--config", str(config), "--set", "learning_rate=0.01", "--weak-model", str(tiny_model_dir),
               "--device", "cpu", "--max-new-tokens", "8", "--score-batch-size", "4"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [row["strategy"] for row in rows] == ["full", "hybrid", "random"]
    assert [row["train_examples"] for row in rows][0] == len(train)
    assert rows[1]["train_examples"] == rows[2]["train_examples"] < len(train)
    assert all(0.0 <= row["f1"] <= 1.0 and row["eval_sentences"] == len(fixture_records) for row in rows)
    assert all(row["train_tokens_per_second"] > 0 and row["scoring_examples_per_second"] > 0 for row in rows)
    settings = json.loads((out / "tiny" / "adapter-hybrid" / "bioselecttune.json").read_text())
    assert settings["train_config"]["learning_rate"] == 0.01 and settings["summary"]["steps"] == 2
    assert len((out / "tiny" / "train.scores.jsonl").read_text().splitlines()) == len(train)
    assert "| tiny | hybrid | tiny | dev |" in (out / "results.md").read_text()
    for strategy in ("full", "hybrid", "random"):
        report = json.loads((out / "tiny" / f"curation-{strategy}" / "report.json").read_text())
        assert report["kept"] == next(row["train_examples"] for row in rows if row["strategy"] == strategy)
        assert report["profile"]["kept negatives"]["count"] == sum(1 for record in train if not record.entities)
    for strategy in ("full", "hybrid", "random"):
        answers = [json.loads(line) for line in (out / "tiny" / f"predictions.{strategy}.tiny-dev.jsonl").read_text().splitlines()]
        assert [item["id"] for item in answers] == [r.id for r in fixture_records]
        assert all(isinstance(item["answer"], str) for item in answers)
        row = next(row for row in rows if row["strategy"] == strategy)
        positives = [index for index, record in enumerate(fixture_records) if record.entities]
        assert row["positive_sentences"] == len(positives)
        assert row["silent_on_positive"] == sum(1 for index in positives if not answers[index]["entities"])
        assert row["negative_sentences"] == len(fixture_records) - len(positives)
        assert row["empty_answer_threshold"] is None
        assert row["silent_on_negative"] == sum(1 for index, r in enumerate(fixture_records) if not r.entities and not answers[index]["entities"])
    comparisons = json.loads((out / "comparisons.json").read_text())
    claims = [("hybrid", "full"), ("hybrid", "random"), ("random", "full")]
    assert [(c["a"], c["b"], c["label"]) for c in comparisons] == [
        (a, b, label) for a, b in claims for label in ("all", "Chemical", "Disease")
    ]
    f1s = {(row["strategy"], "all"): row["f1"] for row in rows}
    f1s.update({(row["strategy"], label): prf["f"] for row in rows for label, prf in row["per_label"].items()})
    assert all(c["f1_a"] == pytest.approx(f1s.get((c["a"], c["label"]), 0.0)) for c in comparisons)
    assert all(c["f1_b"] == pytest.approx(f1s.get((c["b"], c["label"]), 0.0)) for c in comparisons)
    assert "| tiny | full | tiny | dev | Disease |" in (out / "results.md").read_text()
    assert all(c["low"] <= c["high"] and 0.0 <= c["share_not_better"] <= 1.0 for c in comparisons)
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")

    (out / "comparisons.json").unlink()
    again = subprocess.run(command + ["--compare-only"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "comparisons.json").read_text()) == comparisons
    assert json.loads((out / "results.json").read_text()) == rows


def test_the_negatives_ratio_thins_the_negatives_of_hybrid_and_random_alike(tmp_path, fixture_records, tiny_model_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    negatives = [Record(f"negative-{i}", f"Nothing to see here, number {i}.", ()) for i in range(8)]
    train = list(fixture_records) + negatives
    (corpus / "tiny-train.jsonl").write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in train))
    (corpus / "tiny-dev.jsonl").write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in fixture_records))
    config = tmp_path / "train.cfg"
    config.write_text(f'[train]\nbase_model = "{tiny_model_dir}"\nmax_steps = 1\nbatch_size = 4\nlora_r = 4\ncheckpoint_every = 0\n')
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--corpus", str(corpus), "--output", str(out), "--datasets", "tiny",
               "--strategies", "hybrid,random", "--negatives-ratio", "0.25", "--config", str(config),
               "--weak-model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "4", "--score-batch-size", "4"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    for row in rows:
        kept = [json.loads(line) for line in (out / "tiny" / f"train.{row['strategy']}.jsonl").read_text().splitlines()]
        assert sum(not item["positive"] for item in kept) == 2 and row["negatives_ratio"] == 0.25
        assert row["train_examples"] == len(kept)


def test_given_ifd_scores_are_reused_instead_of_scoring_again(tmp_path, fixture_records, tiny_model_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    train = [Record(f"{r.id}-{copy}", r.text, r.entities) for copy in range(2) for r in fixture_records if r.entities]
    (corpus / "tiny-train.jsonl").write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in train))
    (corpus / "tiny-dev.jsonl").write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in fixture_records[:2]))
    config = tmp_path / "train.cfg"
    config.write_text(f'[train]\nbase_model = "{tiny_model_dir}"\nmax_steps = 1\nbatch_size = 4\nlora_r = 4\ncheckpoint_every = 0\n')
    # Scores that rank the training sentences in reverse file order, which no model would produce by chance.
    scores = tmp_path / "given.scores.jsonl"
    scores.write_text("".join(
        json.dumps({"id": r.id, "model": str(tiny_model_dir), "loss_cond": 2.0 * ifd, "loss_uncond": 2.0, "ifd": ifd}) + "\n"
        for r, ifd in ((r, 0.1 + 0.8 * i / len(train)) for i, r in enumerate(train))
    ))
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--corpus", str(corpus), "--output", str(out), "--datasets", "tiny",
               "--strategies", "hybrid", "--scores", str(scores), "--config", str(config), "--weak-model", str(tiny_model_dir),
               "--device", "cpu", "--max-new-tokens", "4"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())[0]["scoring_examples_per_second"] == 0.0
    kept = [json.loads(line)["id"] for line in (out / "tiny" / "train.hybrid.jsonl").read_text().splitlines()]
    assert kept == [r.id for r in train[len(train) - len(train) // 2:]]
    missing = subprocess.run(command[:-8] + ["--scores", str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert missing.returncode == 2 and f"--scores: {tmp_path / 'none.jsonl'} does not exist" in missing.stderr


def test_compare_only_names_the_predictions_file_that_does_not_fit(tmp_path, fixture_records):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "tiny-test.jsonl").write_text("".join(instruction_line(r, ["Disease"]) + "\n" for r in fixture_records))
    out = tmp_path / "out"
    (out / "tiny").mkdir(parents=True)
    (out / "results.json").write_text("[]")
    lines = [json.dumps({"id": r.id, "answer": "[]", "entities": []}) for r in fixture_records]
    (out / "tiny" / "predictions.full.tiny-test.jsonl").write_text("\n".join(lines) + "\n")
    (out / "tiny" / "predictions.hybrid.tiny-test.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    command = [sys.executable, str(SCRIPT), "--corpus", str(corpus), "--output", str(out), "--datasets", "tiny",
               "--split", "test", "--compare-only"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"predictions.hybrid.tiny-test.jsonl line 1: id {fixture_records[-1].id!r}, expected {fixture_records[0].id!r}" in result.stderr


def test_one_adapter_is_evaluated_on_each_named_dataset_and_split_without_scoring(tmp_path, fixture_records, tiny_model_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    labels = ["Disease", "Chemical"]
    lines = "".join(instruction_line(r, labels) + "\n" for r in fixture_records)
    for name in ("mixed-train", "mixed-dev", "first-dev", "first-test", "second-dev", "second-test"):
        (corpus / f"{name}.jsonl").write_text(lines)
    config = tmp_path / "train.cfg"
    config.write_text(f'[train]\nbase_model = "{tiny_model_dir}"\nmax_steps = 1\nbatch_size = 4\nlora_r = 4\ncheckpoint_every = 0\n')
    out = tmp_path / "out"
    command = [sys.executable, "-c", WITHOUT_SPACY, str(SCRIPT), "--corpus", str(corpus), "--output", str(out),
               "--datasets", "mixed", "--strategies", "full", "--eval-datasets", "first,second", "--split", "dev,test",
               "--dev-loss", "--config", str(config), "--weak-model", "no-such-model", "--device", "cpu", "--max-new-tokens", "4"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [(row["eval_dataset"], row["split"]) for row in rows] == [("first", "dev"), ("first", "test"), ("second", "dev"), ("second", "test")]
    assert all(row["strategy"] == "full" and row["scoring_examples_per_second"] is None for row in rows)
    assert rows[0]["dev_loss"] is not None and rows[0]["train_examples"] == len(fixture_records)
    assert not (out / "mixed" / "train.scores.jsonl").exists()


def test_an_unknown_split_is_refused(tmp_path):
    command = [sys.executable, str(SCRIPT), "--output", str(tmp_path), "--split", "dev,tset"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown split 'tset'" in result.stderr
