"""Exporting a trained adapter for distribution: weights cast to bf16, with its settings and records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence, Union

from ..errors import Errors

PathLike = Union[str, Path]
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEPT_FILES = ("adapter_config.json", "bioselecttune.json", "train_log.jsonl", "loss_curve.png")


def export_adapter(adapter_dir: PathLike, output_dir: PathLike, records: Sequence[PathLike] = (), dtype: str = "bfloat16") -> Path:
    """Copy an adapter written by `train` into `output_dir`, weights cast to `dtype`.

    records: further files (e.g. evaluation metrics) copied into `output_dir/records/`, each
    under its parent folder's name so that several `metrics.json` files stay apart.
    """
    import torch
    from safetensors.torch import load_file, save_file

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    missing = [name for name in (ADAPTER_WEIGHTS,) + KEPT_FILES[:2] if not (adapter_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(Errors.E306.format(path=adapter_dir, missing=missing))
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype) or not target.is_floating_point:
        raise ValueError(Errors.E010.format(name="dtype", value=dtype, reason="use a floating-point torch dtype name, e.g. bfloat16"))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    weights = {name: tensor.to(target) if tensor.is_floating_point() else tensor for name, tensor in load_file(str(adapter_dir / ADAPTER_WEIGHTS)).items()}
    save_file(weights, str(output_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    for name in KEPT_FILES:
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, output_dir / name)
    settings = json.loads((output_dir / "bioselecttune.json").read_text(encoding="utf8"))
    settings["weights_dtype"] = dtype
    (output_dir / "bioselecttune.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf8")
    for record in map(Path, records):
        if not record.is_file():
            raise FileNotFoundError(Errors.E002.format(path=record))
        destination = output_dir / "records" / record.parent.name / record.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, destination)
    return output_dir
