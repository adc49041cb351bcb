"""The `python -m spacy_bioselecttune` command line: one module per command."""
from __future__ import annotations

import typer

Arg = typer.Argument
Opt = typer.Option
# Docs per nlp.pipe batch in evaluate and annotate; their sentences are sorted by length together.
PIPE_BATCH_SIZE = 256

app = typer.Typer(name="bioselecttune", no_args_is_help=True, add_completion=False, help=__doc__)

# Each command module registers itself on `app` when imported, in workflow order.
from . import fetch_model  # noqa: E402,F401
from . import convert  # noqa: E402,F401
from . import score  # noqa: E402,F401
from . import curate  # noqa: E402,F401
from . import mix  # noqa: E402,F401
from . import train  # noqa: E402,F401
from . import evaluate  # noqa: E402,F401
from . import annotate  # noqa: E402,F401
from . import assemble  # noqa: E402,F401
from . import bench  # noqa: E402,F401
from . import ship  # noqa: E402,F401
