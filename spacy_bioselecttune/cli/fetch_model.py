"""`fetch-model`: fetch and convert a base model into the local cache, printing where it is."""
from __future__ import annotations

import typer

from ..engine.loading import DEFAULT_BASE_MODEL, resolve_base_model
from . import Arg, app


@app.command("fetch-model")
def fetch_model_cli(
    name: str = Arg(DEFAULT_BASE_MODEL, help="Registered model name, local directory or .gguf file"),
) -> None:
    """Fetch a base model (e.g. smollm2-135m) into the cache and print its checkpoint directory."""
    typer.echo(fetch_model(name))


def fetch_model(name: str = DEFAULT_BASE_MODEL) -> str:
    """Return the local checkpoint directory for `name`, fetching and converting it on first use."""
    return resolve_base_model(name, show_progress=True)
