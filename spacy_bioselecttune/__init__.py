"""spacy-bioselecttune: biomedical NER with fine-tuned LLMs as a spaCy component."""
from __future__ import annotations

__version__ = "0.1.0"

from .engine.answer_format import FORMAT_VERSION, build_prompt, render_answer
from .engine.records import Entity, Mention, Record

__all__ = ["__version__", "FORMAT_VERSION", "Entity", "Mention", "Record", "build_prompt", "render_answer"]
