"""Shared fixtures: a tiny randomly initialised Llama and its byte-level BPE tokenizer, built here,
and a helper that fine-tunes it until it reproduces given answers."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import pytest

from spacy_bioselecttune.engine.answer_format import answer_for_record, build_prompt
from spacy_bioselecttune.engine.records import Entity, Record

LABELS = ["Disease", "Chemical"]

FIXTURE_RECORDS = [
    Record("s1", "Cystic fibrosis is a genetic disease.", (Entity(0, 15, "Disease"),)),
    Record("s2", "Aspirin reduced the risk of colorectal cancer.", (Entity(0, 7, "Chemical"), Entity(28, 45, "Disease"))),
    Record("s3", "The patients were followed for two years.", ()),
    Record("s4", "Cisplatin caused nephrotoxicity in mice.", (Entity(0, 9, "Chemical"), Entity(17, 31, "Disease"))),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", default=False, help="run tests that need a CUDA GPU")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (run with --gpu)")
    config.addinivalue_line("markers", "slow: uses the real embedded model or a whole workflow")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--gpu"):
        return
    skip_gpu = pytest.mark.skip(reason="needs --gpu and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    # Tiny models gain nothing from threads: one keeps runs deterministic and fast on a shared 2-core CPU.
    import torch

    torch.set_num_threads(1)


def build_tiny_model(path: Path, texts: list[str], seed: int = 0) -> Path:
    """Save a 2-layer Llama (hidden size 32) with a byte-level BPE tokenizer trained on `texts`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def fixture_texts() -> list[str]:
    """Prompts plus answers for the fixture records, so the tokenizer covers the format."""
    texts = [build_prompt(r.text, LABELS) + answer_for_record(r) for r in FIXTURE_RECORDS]
    texts += [build_prompt(r.text, ["Disease"]) + answer_for_record(r) for r in FIXTURE_RECORDS]
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a random tiny Llama and its tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), fixture_texts())


@pytest.fixture(scope="session")
def fixture_records() -> list[Record]:
    return list(FIXTURE_RECORDS)


def memorize_answers(base_dir: Path, pairs: Sequence[Tuple[str, str]], out_dir: Path, steps: int, lr: float) -> Path:
    """Fully fine-tune the model in `base_dir` on (prompt, answer) pairs until it reproduces them; save it."""
    import torch

    from spacy_bioselecttune.engine.encoding import encode_example
    from spacy_bioselecttune.engine.loading import load_model
    from spacy_bioselecttune.engine.logprobs import answer_token_loss_sums, collate

    torch.manual_seed(0)
    model, tokenizer = load_model(str(base_dir), device="cpu", trainable=True)
    batch = collate([encode_example(tokenizer, prompt, answer) for prompt, answer in pairs], tokenizer.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        answer_token_loss_sums(model, batch).token_mean().backward()
        optimizer.step()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def answer_memorizer():
    """`memorize_answers(base_dir, pairs, out_dir, steps, lr)` for fixtures that need a model fitted to answers."""
    return memorize_answers
