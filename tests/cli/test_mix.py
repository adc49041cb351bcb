from __future__ import annotations

import json

from typer.testing import CliRunner

from spacy_bioselecttune.cli import app
from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.records import Record

runner = CliRunner()


def test_mix_writes_the_examples_verbatim_and_a_report(tmp_path, fixture_records):
    disease = tmp_path / "disease.jsonl"
    disease.write_text("".join(instruction_line(Record(f"d/{r.id}", r.text, tuple(e for e in r.entities if e.label == "Disease")), ["Disease"]) + "\n" for r in fixture_records))
    both = tmp_path / "both.jsonl"
    both.write_text("".join(instruction_line(Record(f"b/{r.id}", r.text, r.entities), ["Chemical", "Disease"]) + "\n" for r in fixture_records))
    out = tmp_path / "mixed" / "train.jsonl"
    result = runner.invoke(app, ["mix", str(out), str(disease), str(both), "--limit", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    assert set(lines) <= set(disease.read_text().splitlines()) | set(both.read_text().splitlines())
    report = json.loads((tmp_path / "mixed" / "train.report.json").read_text())
    assert report["examples"] == 6
    assert [(s["taken"], s["available"], s["labels"]) for s in report["sources"]] == [
        (3, len(fixture_records), ["Disease"]), (3, len(fixture_records), ["Chemical", "Disease"])
    ]
    assert "labels Chemical, Disease" in result.output
    result = runner.invoke(app, ["mix", str(out), str(disease), str(both), "--limit", "0,1"])
    assert result.exit_code == 0, result.output
    assert [s["taken"] for s in json.loads((tmp_path / "mixed" / "train.report.json").read_text())["sources"]] == [len(fixture_records), 1]
    result = runner.invoke(app, ["mix", str(out), str(disease), str(both), "--limit", "0,x"])
    assert result.exit_code != 0 and "'0,x' is not a number" in result.output
