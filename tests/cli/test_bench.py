from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spacy_bioselecttune.cli import app, bench
from spacy_bioselecttune.cli.bench import RESULTS_JSON, RESULTS_MARKDOWN, read_bench_records


@pytest.fixture
def sentences_jsonl(tmp_path, fixture_records):
    path = tmp_path / "sentences.jsonl"
    lines = [
        json.dumps({"id": r.id, "text": r.text, "entities": [[e.start, e.end, e.label] for e in r.entities]})
        for r in fixture_records
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def test_read_bench_records_formats(tmp_path, sentences_jsonl, fixture_records):
    assert read_bench_records(sentences_jsonl, limit=10) == list(fixture_records)
    assert len(read_bench_records(sentences_jsonl, limit=2)) == 2
    plain = tmp_path / "plain.txt"
    plain.write_text("First sentence.\n\nSecond one.\n", encoding="utf8")
    assert [r.text for r in read_bench_records(plain, limit=10)] == ["First sentence.", "Second one."]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"entities": []}\n', encoding="utf8")
    with pytest.raises(ValueError, match=r"\[E007\].*broken\.jsonl line 2"):
        read_bench_records(broken, limit=10)


def test_bench_cli_writes_results(tiny_model_dir, sentences_jsonl, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_cpu_has_bf16_instructions", lambda: True)
    out = tmp_path / "bench"
    args = ["bench", str(sentences_jsonl), str(out), "-m", str(tiny_model_dir), "-l", "Disease,Chemical",
            "-b", "2", "--max-new-tokens", "8", "-d", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / RESULTS_JSON).read_text())
    reference, optimised, no_cache, no_drafts, bf16, int8, dynamic_run, refilling = data["runs"]
    # on a CPU the optimised run decodes by continuous batching, so that variant is not run again, and
    # the static loop (for CUDA graphs) runs on request only
    assert [run["method"] for run in data["runs"]] == ["reference", "optimised", "optimised, no-prefix-cache", "optimised, no-drafts",
                                                       "optimised, bf16", "optimised, int8", "optimised, dynamic",
                                                       "optimised, static-continuous"]
    assert [run["decoding"] for run in data["runs"]] == [None] + ["continuous"] * 5 + ["dynamic", "static-continuous"]
    assert dynamic_run["outputs"] == refilling["outputs"] == no_drafts["outputs"] == reference["outputs"]
    assert no_drafts["phases"]["drafted_tokens"] == 0 and refilling["phases"]["drafted_tokens"] == 0
    assert int8["sentences"] == 4 and int8["f1"] is not None and 0.0 <= int8["agreement"] <= 1.0
    assert no_cache["outputs"] == reference["outputs"] and no_cache["speed_up"] > 0
    assert bf16["sentences"] == 4 and bf16["f1"] is not None
    assert reference["sentences"] == optimised["sentences"] == 4
    assert optimised["outputs"] == reference["outputs"]
    assert reference["phases"] is None
    dynamic = dynamic_run["phases"]
    assert dynamic["batches"] == 2 and dynamic["prefill_seconds"] > 0
    assert 0 < dynamic["decode_steps"] <= 2 * 7 and dynamic["row_steps"] <= 2 * dynamic["decode_steps"]
    assert dynamic["ms_per_decode_step"] == pytest.approx(1000 * dynamic["decode_seconds"] / dynamic["decode_steps"])
    assert optimised["agreement"] == 1.0
    assert optimised["generated_tokens"] == reference["generated_tokens"] > 0
    assert reference["f1"] is not None and optimised["peak_host_mib"] > 0
    assert "| optimised | continuous |" in (out / RESULTS_MARKDOWN).read_text()
    result = CliRunner().invoke(app, args + ["--variants", "fast"])
    assert result.exit_code != 0 and "E404" in str(result.exception)
    result = CliRunner().invoke(app, args + ["--variants", "none"])
    assert result.exit_code == 0 and len(json.loads((out / RESULTS_JSON).read_text())["runs"]) == 2
    monkeypatch.setattr(bench, "_cpu_has_bf16_instructions", lambda: False)  # bf16 would be emulated: on request only
    result = CliRunner().invoke(app, args + ["--limit", "1"])
    methods = [run["method"] for run in json.loads((out / RESULTS_JSON).read_text())["runs"]]
    assert result.exit_code == 0 and "optimised, int8" in methods and "optimised, bf16" not in methods
    result = CliRunner().invoke(app, args + ["--variants", "static"])
    static = json.loads((out / RESULTS_JSON).read_text())["runs"][-1]
    assert result.exit_code == 0 and static["method"] == "optimised, static" and static["outputs"] == reference["outputs"]
    fixed = static["phases"]
    assert fixed["batches"] == 2 and fixed["row_steps"] == 2 * fixed["decode_steps"]  # the static loop keeps finished rows


def test_bench_warms_up_and_compiles_on_request(tiny_model_dir, sentences_jsonl, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", str(sentences_jsonl), str(out), "-m", str(tiny_model_dir), "-b", "2", "--max-new-tokens", "8",
            "-d", "cpu", "--variants", "compiled", "--warm-up"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    reference, optimised, compiled = json.loads((out / RESULTS_JSON).read_text())["runs"]
    assert compiled["method"] == "optimised, compiled" and compiled["outputs"] == reference["outputs"]
    assert reference["warm_up_seconds"] is None and optimised["warm_up_seconds"] > 0 and compiled["warm_up_seconds"] > 0
    assert compiled["phases"]["batches"] == 2  # the warm-up's batch is not counted
    assert "| warm-up s |" in (out / RESULTS_MARKDOWN).read_text()
