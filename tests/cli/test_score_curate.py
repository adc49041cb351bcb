from __future__ import annotations

import json
import math
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_bioselecttune.cli import app
from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.corpora import read_records
from spacy_bioselecttune.engine.records import Record

LABELS = ["Disease", "Chemical"]
NCBI_TRAIN = Path(__file__).parents[3] / "shared" / "corpora" / "ncbi-disease" / "NCBI-disease-IOB" / "train.tsv"
runner = CliRunner()


def write_jsonl(path: Path, records, labels) -> Path:
    path.write_text("".join(instruction_line(record, labels) + "\n" for record in records), encoding="utf8")
    return path


@pytest.fixture
def instructions(tmp_path, fixture_records) -> Path:
    """Twelve examples: the fixture records under three label sets (ids made unique)."""
    records = []
    for labels in (LABELS, ["Disease"], ["Chemical"]):
        for record in fixture_records:
            entities = tuple(e for e in record.entities if e.label in labels)
            records.append((Record(f"{record.id}-{'-'.join(labels)}", record.text, entities), labels))
    with open(tmp_path / "train.jsonl", "w", encoding="utf8") as out:
        for record, labels in records:
            out.write(instruction_line(record, labels) + "\n")
    return tmp_path / "train.jsonl"


def run_cli(*args: str) -> None:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_score_resumes_after_interruption_with_identical_scores(tmp_path, instructions, tiny_model_dir):
    model = str(tiny_model_dir)
    whole = tmp_path / "whole.jsonl"
    run_cli("score", instructions, whole, "--model", model, "--batch-size", "5", "--device", "cpu")

    resumed = tmp_path / "resumed.jsonl"
    command = [sys.executable, "-m", "spacy_bioselecttune", "score", str(instructions), str(resumed),
               "--model", model, "--batch-size", "5", "--device", "cpu", "--max-batches", "1"]
    subprocess.run(command, check=True, capture_output=True)
    assert len(resumed.read_text().splitlines()) == 5
    with open(resumed, "a", encoding="utf8") as out:
        out.write('{"id": "s2-Disease", "loss_cond": 6.0')  # a line cut short by a kill
    with pytest.warns(UserWarning, match="W400"):
        run_cli("score", instructions, resumed, "--model", model, "--batch-size", "5", "--device", "cpu")
    assert resumed.read_text() == whole.read_text()
    rows = [json.loads(line) for line in whole.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(json.loads(l)["id"] for l in instructions.read_text().splitlines())
    assert all(set(row) == {"id", "model", "loss_cond", "loss_uncond", "ifd"} and row["model"] == model for row in rows)
    run_cli("score", instructions, resumed, "--model", model, "--device", "cpu")
    assert resumed.read_text() == whole.read_text()


def test_curate_hybrid_keeps_top_half_of_eligible_positives_and_all_negatives(tmp_path, instructions, tiny_model_dir):
    scores = tmp_path / "scores.jsonl"
    run_cli("score", instructions, scores, "--model", str(tiny_model_dir), "--device", "cpu")
    ifd = {row["id"]: row["ifd"] for row in map(json.loads, scores.read_text().splitlines())}
    curated, report_dir = tmp_path / "curated.jsonl", tmp_path / "report"
    run_cli("curate", instructions, scores, curated, "--strategy", "hybrid", "--ratio", "0.5", "--report-dir", report_dir)

    examples = [json.loads(line) for line in instructions.read_text().splitlines()]
    kept = {json.loads(line)["id"] for line in curated.read_text().splitlines()}
    eligible = [e["id"] for e in examples if e["positive"] and ifd[e["id"]] is not None and ifd[e["id"]] < 1]
    assert len(eligible) >= 2
    kept_positives = [e["id"] for e in examples if e["positive"] and e["id"] in kept]
    assert len(kept_positives) == math.floor(0.5 * len(eligible))
    assert all(e["id"] in kept for e in examples if not e["positive"])
    dropped = [i for i in eligible if i not in kept]
    assert min(ifd[i] for i in kept_positives) >= max(ifd[i] for i in dropped)
    assert curated.read_text().splitlines() == [l for l in instructions.read_text().splitlines() if json.loads(l)["id"] in kept]

    report = json.loads((report_dir / "report.json").read_text())
    assert report["counts"]["positive"]["kept"] == len(kept_positives)
    assert report["counts"]["negative"]["dropped"] == 0
    assert report["settings"]["metric"] == "loss_ratio"
    assert (report_dir / "ifd_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert "| positive |" in (report_dir / "report.md").read_text()


def test_curate_random_control_and_config_file(tmp_path, instructions):
    examples = [json.loads(line) for line in instructions.read_text().splitlines()]
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(
        json.dumps({"id": e["id"], "loss_cond": 1.0 + 0.1 * i, "loss_uncond": 3.0, "ifd": None}) + "\n"
        for i, e in enumerate(examples)
    ))
    config = tmp_path / "curate.cfg"
    config.write_text('[curate]\nstrategy = "random"\nratio = 0.5\nnegatives_ratio = 0.5\nseed = 7\nmetric = "ppl_ratio"\n')
    out = tmp_path / "random.jsonl"
    run_cli("curate", instructions, scores, out, "--config", config, "--report-dir", tmp_path / "r")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    positives = sum(e["positive"] for e in examples)
    assert report["settings"]["strategy"] == "random" and report["settings"]["seed"] == 7
    assert report["counts"]["positive"]["kept"] == math.floor(0.5 * positives)
    assert report["counts"]["negative"]["kept"] == math.floor(0.5 * (len(examples) - positives))
    run_cli("curate", instructions, scores, tmp_path / "full.jsonl", "--config", config, "--strategy", "full")
    assert (tmp_path / "full.jsonl").read_text() == instructions.read_text()


def test_curate_requires_a_score_for_every_example(tmp_path, instructions):
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"id": "s1-Disease-Chemical", "loss_cond": 1.0, "loss_uncond": 2.0, "ifd": 0.5}) + "\n")
    result = runner.invoke(app, ["curate", str(instructions), str(scores), str(tmp_path / "out.jsonl")])
    assert result.exit_code != 0
    assert "E403" in str(result.exception)


@pytest.mark.slow
@pytest.mark.skipif(not NCBI_TRAIN.exists(), reason="NCBI-disease corpus not present")
def test_score_and_curate_ncbi_sentences_with_smollm2(tmp_path):
    records = list(islice(read_records("iob", NCBI_TRAIN, labels=["Disease"]), 24))
    instructions = write_jsonl(tmp_path / "ncbi.jsonl", records, ["Disease"])
    scores = tmp_path / "scores.jsonl"
    run_cli("score", instructions, scores, "--model", "smollm2-135m", "--batch-size", "8", "--device", "cpu")
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 24
    assert all(0 < row["loss_cond"] < row["loss_uncond"] for row in rows)  # the prompt makes answers easier
    curated = tmp_path / "curated.jsonl"
    run_cli("curate", instructions, scores, curated, "--report-dir", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    positives = report["counts"]["positive"]
    assert positives["kept"] == math.floor(0.5 * positives["eligible"])
    assert report["counts"]["negative"]["kept"] == report["counts"]["negative"]["total"]


def test_score_mix_and_curate_run_where_spacy_and_thinc_are_not_installed(tmp_path, instructions, tiny_model_dir):
    blocked = "import runpy, sys; sys.modules['spacy'] = sys.modules['thinc'] = None; sys.argv[0] = 'bioselecttune'; runpy.run_module('spacy_bioselecttune', run_name='__main__')"

    def run_without_spacy(*args: str) -> None:
        result = subprocess.run([sys.executable, "-c", blocked, *map(str, args)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]

    scores = tmp_path / "scores.jsonl"
    run_without_spacy("score", instructions, scores, "--model", tiny_model_dir, "--batch-size", "4", "--device", "cpu")
    run_without_spacy("curate", instructions, scores, tmp_path / "kept.jsonl", "--strategy", "hybrid")
    run_without_spacy("mix", tmp_path / "mixed.jsonl", instructions, "--limit", "6")
    assert len(scores.read_text().splitlines()) == 12
    assert 0 < len((tmp_path / "kept.jsonl").read_text().splitlines()) < 12
    assert len((tmp_path / "mixed.jsonl").read_text().splitlines()) == 6
