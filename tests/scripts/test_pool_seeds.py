from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import pytest

from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.metrics import score_records
from spacy_bioselecttune.engine.records import Record

SCRIPT = Path(__file__).parents[2] / "scripts" / "pool_seeds.py"
LABELS = ["Disease", "Chemical"]


def write_run(run_dir: Path, records: Sequence[Record], kept: dict, seed: int, learning_rate: float = 5e-4, threshold: Optional[float] = None) -> None:
    """A strategy-grid output on the split `tiny-test`: per strategy, the first `kept[strategy]`
    entities of each record as its predictions, and the adapter settings with `seed`."""
    rows = []
    for strategy, keep in kept.items():
        adapter = run_dir / "tiny" / f"adapter-{strategy}"
        adapter.mkdir(parents=True)
        settings = {"train_config": {"learning_rate": learning_rate, "lora_r": 64, "seed": seed}}
        (adapter / "bioselecttune.json").write_text(json.dumps(settings))
        lines = [json.dumps({"id": r.id, "answer": "", "entities": [[e.start, e.end, e.label] for e in r.entities[:keep]]}) for r in records]
        (run_dir / "tiny" / f"predictions.{strategy}.tiny-test.jsonl").write_text("\n".join(lines) + "\n")
        rows.append({"dataset": "tiny", "eval_dataset": "tiny", "split": "test", "strategy": strategy,
                     "eval_sentences": len(records), "negatives_ratio": 1.0, "empty_answer_threshold": threshold})
    (run_dir / "results.json").write_text(json.dumps(rows))


def predicted(records: Sequence[Record], keep: int) -> list:
    return [Record(r.id, r.text, r.entities[:keep]) for r in records]


@pytest.fixture
def corpus(tmp_path, fixture_records) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "tiny-test.jsonl").write_text("".join(instruction_line(r, LABELS) + "\n" for r in fixture_records))
    return folder


def run(corpus: Path, output: Path, runs: Sequence[Path]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--corpus", str(corpus), "--output", str(output),
               "--runs", ",".join(str(path) for path in runs), "--bootstrap-samples", "200"]
    return subprocess.run(command, capture_output=True, text=True)


def test_runs_that_differ_in_seed_are_pooled_per_strategy_and_label(tmp_path, corpus, fixture_records):
    first, second, third = tmp_path / "seed0", tmp_path / "seed1", tmp_path / "full-seed1"
    write_run(first, fixture_records, {"full": 9, "hybrid": 1}, seed=0)
    write_run(second, fixture_records, {"hybrid": 0}, seed=1)
    write_run(third, fixture_records, {"full": 2}, seed=1)
    result = run(corpus, tmp_path / "pooled", [first, second, third])
    assert result.returncode == 0, result.stderr[-3000:]
    pooled = json.loads((tmp_path / "pooled" / "seeds.json").read_text())
    row = next(r for r in pooled["rows"] if (r["strategy"], r["label"]) == ("hybrid", "all"))
    expected = [score_records(fixture_records, predicted(fixture_records, keep)).overall.f1 for keep in (1, 0)]
    assert row["seeds"] == [0, 1] and row["f1s"] == pytest.approx(expected) and row["mean"] == pytest.approx(sum(expected) / 2)
    assert {(r["strategy"], r["label"]) for r in pooled["rows"]} == {(s, l) for s in ("full", "hybrid") for l in ("all", *sorted(LABELS))}
    claims = [(c["a"], c["b"], c["label"]) for c in pooled["comparisons"]]
    assert claims == [("hybrid", "full", label) for label in ("all", "Chemical", "Disease")]
    overall = pooled["comparisons"][0]
    assert overall["seeds_a"] == [0, 1] and overall["seeds_b"] == [0, 1] and overall["high"] < 0.0
    assert "| tiny | tiny | test | hybrid | all |" in (tmp_path / "pooled" / "seeds.md").read_text()
    silent = [(r["strategy"], r["seed"], r["silent_on_positive"]) for r in pooled["empty_answers"]]
    positives = sum(1 for r in fixture_records if r.entities)
    assert silent == [("full", 0, 0), ("full", 1, 0), ("hybrid", 0, 0), ("hybrid", 1, positives)]
    assert "| tiny | tiny | test | hybrid | 1 |" in (tmp_path / "pooled" / "seeds.md").read_text()
    assert (tmp_path / "pooled" / "seeds.png").read_bytes().startswith(b"\x89PNG")


def test_runs_with_other_settings_or_a_repeated_seed_are_refused(tmp_path, corpus, fixture_records):
    write_run(tmp_path / "a", fixture_records, {"hybrid": 1}, seed=0)
    write_run(tmp_path / "b", fixture_records, {"hybrid": 1}, seed=1, learning_rate=1e-4)
    write_run(tmp_path / "c", fixture_records, {"hybrid": 1}, seed=0)
    result = run(corpus, tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    assert result.returncode == 1
    assert f"{tmp_path / 'b'} trained tiny hybrid with learning_rate=0.0001, {tmp_path / 'a'} with learning_rate=0.0005" in result.stderr
    write_run(tmp_path / "d", fixture_records, {"hybrid": 1}, seed=1, threshold=0.9)
    result = run(corpus, tmp_path / "out", [tmp_path / "a", tmp_path / "d"])
    assert result.returncode == 1 and "with empty_answer_threshold=0.9" in result.stderr
    result = run(corpus, tmp_path / "out", [tmp_path / "a", tmp_path / "c"])
    assert result.returncode == 1 and f"hybrid with seed 0 on tiny/tiny/test is in both {tmp_path / 'a'} and {tmp_path / 'c'}" in result.stderr
