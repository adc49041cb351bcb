from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_bioselecttune.cli import app
from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.cli.train import command_line_overrides, load_train_config

CONFIGS = Path(__file__).parents[2] / "configs"
runner = CliRunner()


@pytest.fixture
def train_jsonl(tmp_path, fixture_records) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(instruction_line(r, ["Disease", "Chemical"]) + "\n" for r in fixture_records))
    return path


@pytest.mark.parametrize("name", ["train_quick.cfg", "train_full.cfg", "train_cpu.cfg"])
def test_shipped_configs_load(name):
    cfg = load_train_config(CONFIGS / name)
    assert cfg.base_model == "smollm2-135m"
    assert not cfg.full_finetune


def test_overrides_win_over_the_config_file():
    cfg = load_train_config(CONFIGS / "train_quick.cfg", {"train.max_steps": 3, "train.target_modules": "all-linear"})
    assert cfg.max_steps == 3 and cfg.target_modules == "all-linear"
    with pytest.raises(ValueError, match="E408"):
        load_train_config(CONFIGS / "train_quick.cfg", {"training.max_steps": 3})
    with pytest.raises(ValueError, match="E408"):
        load_train_config(None, {"train.steps": 3})


def test_command_line_floats_keep_the_digits_typed():
    overrides = command_line_overrides(["--train.learning_rate", "0.0003", "--train.min_lr_ratio=0.1", "--train.epochs", "2"])
    assert overrides == {"train.learning_rate": 0.0003, "train.min_lr_ratio": 0.1, "train.epochs": 2}
    assert repr(overrides["train.learning_rate"]) == "0.0003"


def test_train_cli_writes_an_adapter(tmp_path, train_jsonl, tiny_model_dir):
    out = tmp_path / "adapter"
    args = ["train", str(train_jsonl), str(out), "--dev", str(train_jsonl), "--config", str(CONFIGS / "train_quick.cfg"),
            "--base-model", str(tiny_model_dir), "--device", "cpu", "--train.max_steps", "2", "--train.batch_size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    settings = json.loads((out / "bioselecttune.json").read_text())
    assert settings["base_model"] == str(tiny_model_dir)
    assert settings["train_config"]["max_steps"] == 2 and settings["train_config"]["lora_r"] == load_train_config(CONFIGS / "train_quick.cfg").lora_r
    assert settings["summary"]["dev_loss"] is not None
    assert (out / "adapter_model.safetensors").is_file() and (out / "loss_curve.png").is_file()
