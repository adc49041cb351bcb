"""`ship`: copy a trained adapter, as bf16, with its settings and evaluation records, for distribution."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ..engine.export import export_adapter
from . import Arg, Opt, app


@app.command("ship")
def ship_cli(
    adapter_dir: Path = Arg(..., help="Adapter directory written by `train`", exists=True, file_okay=False),
    output_dir: Path = Arg(..., help="Directory to (re)write, e.g. spacy_bioselecttune/adapters/NAME", file_okay=False),
    records: List[Path] = Opt([], "--record", "-r", help="A file to keep beside the adapter (repeatable), e.g. metrics.json"),
    dtype: str = Opt("bfloat16", "--dtype", help="Weight dtype of the copy"),
) -> None:
    """Write the adapter's weights in `dtype` plus its config, settings, log, loss curve and records."""
    out = export_adapter(adapter_dir, output_dir, records, dtype)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    typer.echo(f"Shipped {adapter_dir} -> {out} ({size / 1e6:.1f} MB)")
