from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spacy_bioselecttune.cli.convert import instruction_line

SCRIPT = Path(__file__).parents[2] / "scripts" / "profile_decoding.py"
WITHOUT_SPACY = "import runpy, sys; sys.modules['spacy'] = sys.modules['thinc'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def test_profile_times_each_decoding_loop_on_random_weights_without_spacy(tmp_path, fixture_records, tiny_model_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in fixture_records))
    out = tmp_path / "profile"
    command = [sys.executable, "-c", WITHOUT_SPACY, str(SCRIPT), "--prompts", str(prompts), "--output", str(out),
               "--random-weights", str(tiny_model_dir), "--device", "cpu", "--decodings", "dynamic,static",
               "--batch-sizes", "2,3", "--batches", "2", "--max-new-tokens", "5", "--repeats", "2", "--rows", "5"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "decoding.json").read_text())
    # the loops take turns: each is timed twice per batch size, profiled on its first turn only
    assert [(row["decoding"], row["batch_size"], row["repeat"]) for row in rows] == [
        ("dynamic", 2, 0), ("static", 2, 0), ("dynamic", 2, 1), ("static", 2, 1),
        ("dynamic", 3, 0), ("static", 3, 0), ("dynamic", 3, 1), ("static", 3, 1)]
    for row in rows:
        assert row["prompts"] == 2 * row["batch_size"] and row["batches"] == 2  # the warm-up batch is not counted
        assert row["decode_steps"] > 0
        assert (row["wall_ms_per_step"] > 0 and row["device_busy_seconds"] == 0.0) if row["repeat"] == 0 else "wall_ms_per_step" not in row
    assert "aten::" in (out / "static_b3_by_cpu_time.txt").read_text()
    bad = subprocess.run(command[:-12] + ["--decodings", "graphs"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown decodings ['graphs']" in bad.stderr
