from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.records import Record

SCRIPT = Path(__file__).parents[2] / "scripts" / "profile_training.py"
WITHOUT_SPACY = "import runpy, sys; sys.modules['spacy'] = sys.modules['thinc'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def test_profile_times_steps_and_scoring_on_random_weights_without_spacy(tmp_path, fixture_records, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    records = [Record(f"{r.id}-{copy}", r.text, r.entities) for copy in range(3) for r in fixture_records]
    train.write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in records))
    config = tmp_path / "train.cfg"
    config.write_text('[train]\nbase_model = "not-used-with-random-weights"\nbatch_size = 2\nlora_r = 4\n')
    out = tmp_path / "profile"
    command = [sys.executable, "-c", WITHOUT_SPACY, str(SCRIPT), "--train", str(train), "--output", str(out),
               "--config", str(config), "--random-weights", str(tiny_model_dir), "--device", "cpu",
               "--warmup", "1", "--steps", "2", "--score-examples", "5", "--score-batch-sizes", "2,5", "--rows", "5"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "profile.json").read_text())
    assert results["training"]["profiled_steps"] == 2 and results["training"]["median_step_seconds"] > 0
    assert [row["batch_size"] for row in results["scoring"]] == [2, 5]
    assert all(row["examples"] == 5 and row["examples_per_second"] > 0 for row in results["scoring"])
    assert "aten::" in (out / "train_by_cpu_time.txt").read_text()
    assert (out / "random-base" / "config.json").is_file()
