"""Error and warning messages with codes; a leaf module every layer imports."""
from __future__ import annotations

import warnings


class _CodedMeta(type):
    """Prefix each message attribute with its code, as in `[E001] ...`."""

    def __getattribute__(cls, code: str) -> str:
        message = super().__getattribute__(code)
        if code.startswith("__"):
            return message
        return f"[{code}] {message}"


class Errors(metaclass=_CodedMeta):
    E001 = "Unknown base model '{name}'. Use a registered name ({known}), a local directory, a .gguf file or a Hugging Face hub id."
    E002 = "Adapter path '{path}' does not exist."
    E003 = "Adapter '{path}' was trained on labels {trained}; label(s) {unknown} were never seen in training."
    E004 = "Adapter '{path}' uses answer format version {found}, but this package writes version {expected}."
    E005 = "Labels must be a non-empty list of distinct non-empty names, got {labels!r}."
    E006 = "Could not fetch model '{name}': {reason}"
    E007 = "{path} line {line}: {problem}"
    E008 = "{path}: {problem}"
    E009 = "Device '{device}' is not available: {reason}"
    E010 = "Invalid value for {name}: {value!r} ({reason})."


class Warnings(metaclass=_CodedMeta):
    W001 = "Model output could not be parsed as a JSON list of entities ({reason}); treated as no entities: {raw!r}"
    W002 = "{count} predicted name(s) do not occur in the text and were dropped, e.g. {example!r}."
    W003 = "{count} predicted item(s) had a label outside {labels} and were dropped, e.g. {example!r}."


def warn(message: str) -> None:
    """Emit a package warning with the coded message."""
    warnings.warn(message, UserWarning, stacklevel=3)
