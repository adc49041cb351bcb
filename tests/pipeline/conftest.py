"""Pipeline fixtures: a tiny model fine-tuned until it reproduces the fixture answers, and a LoRA adapter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_bioselecttune.engine.answer_format import FORMAT_VERSION, answer_for_record, build_prompt
from spacy_bioselecttune.engine.records import Record

LABELS = ["Disease", "Chemical"]  # the fixture records' labels, in prompt order


@pytest.fixture(scope="session")
def memorized_model_dir(
    tiny_model_dir: Path, fixture_records: list[Record], answer_memorizer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny model whose greedy answers to the fixture prompts are the gold answers."""
    pairs = [(build_prompt(r.text, LABELS), answer_for_record(r)) for r in fixture_records]
    return answer_memorizer(tiny_model_dir, pairs, tmp_path_factory.mktemp("memorized"), steps=300, lr=3e-3)


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return list(LABELS)


def make_lora_adapter(base_dir: Path, out_dir: Path, labels=LABELS, format_version: int = FORMAT_VERSION) -> Path:
    """A randomly initialised LoRA adapter on q_proj/v_proj, with its `bioselecttune.json`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out_dir)
    metadata = {"format_version": format_version, "labels": list(labels)}
    (out_dir / "bioselecttune.json").write_text(json.dumps(metadata), encoding="utf8")
    return out_dir


@pytest.fixture(scope="session")
def lora_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="session")
def adapter_maker():
    """`make_lora_adapter(base_dir, out_dir, labels=..., format_version=...)` for tests that need their own."""
    return make_lora_adapter
