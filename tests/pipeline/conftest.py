"""Pipeline fixtures: a tiny model fine-tuned until it reproduces the fixture answers, and a LoRA adapter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spacy_bioselecttune.engine.answer_format import FORMAT_VERSION, answer_for_record, build_prompt
from spacy_bioselecttune.engine.records import Record

LABELS = ["Disease", "Chemical"]  # the fixture records' labels, in prompt order


def memorize(base_dir: Path, records: list[Record], out_dir: Path, steps: int = 300, seed: int = 0) -> Path:
    """Fully fine-tune the tiny model on the records' (prompt, answer) pairs and save it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spacy_bioselecttune.engine.encoding import encode_example
    from spacy_bioselecttune.engine.logprobs import answer_token_losses, collate

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    examples = [encode_example(tokenizer, build_prompt(r.text, LABELS), answer_for_record(r)) for r in records]
    batch = collate(examples, tokenizer.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = answer_token_losses(model, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """Tiny models run fastest on one thread, and the tests share the CPU with other work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def memorized_model_dir(tiny_model_dir: Path, fixture_records: list[Record], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose greedy answers to the fixture prompts are the gold answers."""
    return memorize(tiny_model_dir, fixture_records, tmp_path_factory.mktemp("memorized"))


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
