"""`train`: fine-tune a LoRA adapter on instruction JSONL, with settings from a .cfg file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

from ..engine.train import TrainConfig, TrainSummary, train_adapter
from ..errors import Errors
from . import Arg, Opt, app

SECTION = "train"


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_cli(
    ctx: typer.Context,
    train_path: Path = Arg(..., help="Training instruction JSONL (e.g. the curated subset)", exists=True, dir_okay=False),
    output_dir: Path = Arg(..., help="Directory for the adapter, bioselecttune.json, log and loss curve", file_okay=False),
    dev_path: Optional[Path] = Opt(None, "--dev", help="Dev instruction JSONL for a loss per epoch", exists=True, dir_okay=False),
    config_path: Optional[Path] = Opt(None, "--config", "-c", help="Settings file with a train section", exists=True, dir_okay=False),
    base_model: Optional[str] = Opt(None, "--base-model", "-m", help="Base model (overrides the config)"),
    full_finetune: bool = Opt(False, "--full-finetune", help="Train all weights instead of a LoRA adapter"),
    device: str = Opt("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Fine-tune on answer tokens only; override any setting as `--train.learning_rate 1e-4`.

    An interrupted run resumes exactly from its last checkpoint in OUTPUT_DIR.
    """
    overrides = command_line_overrides(ctx.args)
    if base_model is not None:
        overrides[f"{SECTION}.base_model"] = base_model
    if full_finetune:
        overrides[f"{SECTION}.full_finetune"] = True
    summary = train(train_path, output_dir, dev_path, config_path, overrides, device, show_progress=True)
    typer.echo(
        f"Trained {summary.steps} steps ({summary.epochs} epochs, {summary.tokens} tokens, "
        f"{summary.tokens_per_second:.0f} tokens/s); final loss {summary.final_loss:.4f} -> {output_dir}"
    )


def command_line_overrides(args: List[str]) -> Dict[str, Any]:
    """`--train.key value` pairs as spaCy parses them, with floats as typed (`0.0003`, not `0.00030000000000000003`)."""
    from spacy.cli._util import parse_config_overrides

    overrides: Dict[str, Any] = parse_config_overrides(args)
    return {key: float(f"{value:.15g}") if isinstance(value, float) else value for key, value in overrides.items()}


def load_train_config(config_path: Optional[Path] = None, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The `train` section of `config_path` (or the defaults) with dotted `train.key` overrides applied."""
    from thinc.api import Config

    text = config_path.read_text(encoding="utf8") if config_path is not None else f"[{SECTION}]\n"
    source = str(config_path) if config_path is not None else "the command line"
    overrides = dict(overrides or {})
    stray = sorted(key for key in overrides if not key.startswith(f"{SECTION}."))
    if stray:
        raise ValueError(Errors.E408.format(keys=stray, source="the command line", known=f"{SECTION}.<setting>"))
    config = Config().from_str(text, overrides=overrides, interpolate=True)
    other = sorted(key for key in config if key != SECTION)
    if other:
        raise ValueError(Errors.E408.format(keys=other, source=source, known=f"the [{SECTION}] section"))
    return TrainConfig.from_dict(config.get(SECTION, {}), source=source)


def train(
    train_path: Path,
    output_dir: Path,
    dev_path: Optional[Path] = None,
    config_path: Optional[Path] = None,
    overrides: Optional[Dict[str, Any]] = None,
    device: str = "auto",
    show_progress: bool = False,
) -> TrainSummary:
    """Train an adapter into `output_dir` with the settings of `config_path` plus `overrides`.

    A checkpoint already in `output_dir` is resumed exactly.
    """
    cfg = load_train_config(config_path, overrides)
    return train_adapter(cfg, train_path, output_dir, dev_path, device, show_progress)
