from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_bioselecttune.cli import app
from spacy_bioselecttune.cli.fetch_model import fetch_model


def test_fetch_model_cli_prints_a_local_checkpoint(tiny_model_dir):
    result = CliRunner().invoke(app, ["fetch-model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tiny_model_dir)


def test_fetch_model_cli_reports_a_missing_file(tmp_path):
    result = CliRunner().invoke(app, ["fetch-model", str(tmp_path / "missing.gguf")])
    assert result.exit_code != 0
    assert "[E100]" in str(result.exception)


@pytest.mark.slow
def test_fetch_model_gives_the_cached_embedded_checkpoint():
    location = Path(fetch_model("smollm2-135m"))
    assert location.name == "smollm2-135m"
    assert {"config.json", "model.safetensors", "tokenizer.json", "provenance.json"} <= {p.name for p in location.iterdir()}
    assert fetch_model("smollm2-135m") == str(location)
