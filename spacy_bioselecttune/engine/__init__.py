"""The engine: prompt format, parsing, alignment, generation, IFD scoring and training.

It imports no spaCy, and loads torch, transformers and peft only inside the functions
that need them.
"""
