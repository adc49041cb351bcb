import subprocess
import sys

import pytest

HEAVY = ["spacy", "spacy_llm", "thinc", "typer", "torch", "transformers", "peft", "matplotlib"]


@pytest.mark.parametrize(
    "module",
    [
        "spacy_bioselecttune",
        "spacy_bioselecttune.engine.answer_format",
        "spacy_bioselecttune.engine.parser",
        "spacy_bioselecttune.engine.align",
        "spacy_bioselecttune.engine.corpora",
        "spacy_bioselecttune.engine.loading",
        "spacy_bioselecttune.engine.generate",
        "spacy_bioselecttune.engine.ifd",
        "spacy_bioselecttune.engine.train",
        "spacy_bioselecttune.engine.metrics",
    ],
)
def test_engine_imports_no_spacy_and_no_heavy_libraries(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
