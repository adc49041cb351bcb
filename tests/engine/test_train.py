from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.answer_format import FORMAT_VERSION
from spacy_bioselecttune.engine.encoding import encode_example
from spacy_bioselecttune.engine.ifd import read_instruction_jsonl
from spacy_bioselecttune.engine.records import Record
from spacy_bioselecttune.engine.train import (
    TrainConfig,
    batch_loss_sums,
    encode_for_training,
    learning_rate_at,
    length_grouped_batches,
    train_adapter,
    training_autocast,
)

LABEL_SETS = (["Disease", "Chemical"], ["Disease"])


class Interrupted(Exception):
    pass


@pytest.fixture
def train_jsonl(tmp_path, fixture_records) -> Path:
    """Eight examples: the four fixture records under two label sets."""
    path = tmp_path / "train.jsonl"
    with open(path, "w", encoding="utf8") as out:
        for labels in LABEL_SETS:
            for record in fixture_records:
                entities = tuple(e for e in record.entities if e.label in labels)
                out.write(instruction_line(Record(f"{record.id}-{len(labels)}", record.text, entities), labels) + "\n")
    return path


def tiny_config(model_dir: Path, **changes) -> TrainConfig:
    settings = dict(base_model=str(model_dir), max_steps=6, batch_size=4, learning_rate=1e-2, warmup_steps=1,
                    log_every=1, checkpoint_every=0, lora_r=4, lora_alpha=8)
    settings.update(changes)
    return TrainConfig(**settings)


def adapter_weights(directory: Path):
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=4, min_lr_ratio=0.1)
    rates = [learning_rate_at(step, 20, cfg) for step in range(20)]
    assert rates[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert rates[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))
    assert learning_rate_at(20, 20, cfg) == pytest.approx(0.1)
    linear = TrainConfig(learning_rate=1.0, warmup_steps=0, min_lr_ratio=0.0, lr_schedule="linear")
    assert learning_rate_at(5, 10, linear) == pytest.approx(0.5)


def test_length_grouped_batches_cover_every_example_once_per_epoch():
    lengths = [(i * 37) % 101 for i in range(1000)]
    first = length_grouped_batches(lengths, 8, seed=0, epoch=0)
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert first == length_grouped_batches(lengths, 8, seed=0, epoch=0)
    assert first != length_grouped_batches(lengths, 8, seed=0, epoch=1)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 10  # neighbours in a batch have similar lengths


def test_length_grouped_batches_keep_groups_apart():
    lengths = [(i * 37) % 101 for i in range(1000)]
    groups = [("Disease",) if i % 3 else ("Gene",) for i in range(1000)]
    batches = length_grouped_batches(lengths, 8, seed=0, epoch=0, groups=groups)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    mixed = [batch for batch in batches if len({groups[i] for i in batch}) > 1]
    assert len(mixed) <= 3  # at most one per chunk of 50 batches, where the sorted groups meet
    assert batches == length_grouped_batches(lengths, 8, seed=0, epoch=0, groups=groups)


def test_a_shared_prefix_gives_the_same_loss_and_gradients(train_jsonl, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from spacy_bioselecttune.engine.loading import load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", trainable=True)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # nonzero B, so that gradients reach A and the prefix's states matter
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    encoded, label_lists = encode_for_training(tokenizer, read_instruction_jsonl(train_jsonl), 512, train_jsonl)
    batch = [e for e, labels in zip(encoded, label_lists) if labels == ("Disease",)]
    results = []
    for share_prefix in (False, True):
        model.zero_grad()
        sums = batch_loss_sums(model, batch, tokenizer.pad_token_id, share_prefix)
        sums.token_mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((sums.sums.detach(), grads))
    (plain_sums, plain_grads), (shared_sums, shared_grads) = results
    assert torch.allclose(plain_sums, shared_sums, atol=1e-5)
    assert all(grad.abs().sum() > 0 for grad in plain_grads.values())
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, shared_grads[name], atol=1e-6, rtol=1e-4), name


def test_config_rejects_unknown_settings_and_bad_values():
    with pytest.raises(ValueError, match="E408"):
        TrainConfig.from_dict({"lr": 1e-4})
    with pytest.raises(ValueError, match="E404"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="E404.*precision"):
        TrainConfig(precision="fp16")
    assert TrainConfig.from_dict({"target_modules": ["q_proj"]}).target_modules == ("q_proj",)


def test_loss_falls_and_output_holds_only_the_adapter(tmp_path, train_jsonl, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    summary = train_adapter(tiny_config(tiny_model_dir), train_jsonl, out, dev_path=train_jsonl, device="cpu")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["loss"] < log[0]["loss"] - 0.1
    assert [row["dev_loss"] for row in log if "dev_loss" in row] == sorted(
        (row["dev_loss"] for row in log if "dev_loss" in row), reverse=True
    )
    assert summary.steps == 6 and summary.tokens > 0 and summary.final_loss == log[-1]["loss"]

    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "bioselecttune.json"} <= names
    assert names <= {"adapter_model.safetensors", "adapter_config.json", "bioselecttune.json", "README.md",
                     "train_log.jsonl", "loss_curve.png"}
    assert all("lora_" in name for name in adapter_weights(out))
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    settings = json.loads((out / "bioselecttune.json").read_text())
    assert settings["labels"] == ["Disease", "Chemical"]
    assert settings["label_sets"] == [["Disease", "Chemical"], ["Disease"]]
    assert settings["format_version"] == FORMAT_VERSION
    assert settings["base_model"] == str(tiny_model_dir)
    assert settings["train_config"]["lora_r"] == 4
    assert settings["summary"]["steps"] == 6

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert model.peft_config["default"].r == 4


def test_resumed_training_ends_with_the_same_weights(tmp_path, train_jsonl, tiny_model_dir):
    import torch

    cfg = tiny_config(tiny_model_dir, batch_size=3, grad_accum_steps=2, checkpoint_every=2, lora_dropout=0.2)
    whole = tmp_path / "whole"
    train_adapter(cfg, train_jsonl, whole, device="cpu")

    def stop_at_five(step: int, loss: float) -> None:
        if step == 5:
            raise Interrupted

    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_adapter(cfg, train_jsonl, resumed, device="cpu", on_step=stop_at_five)
    assert (resumed / "checkpoint" / "state.pt").is_file()
    summary = train_adapter(cfg, train_jsonl, resumed, device="cpu")
    assert summary.resumed_from_step == 4
    assert not (resumed / "checkpoint").exists()
    expected, found = adapter_weights(whole), adapter_weights(resumed)
    assert expected.keys() == found.keys()
    assert all(torch.allclose(expected[k], found[k], rtol=0, atol=1e-7) for k in expected)
    log = lambda d: [json.loads(l) for l in (d / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert [row["loss"] for row in log(resumed)] == pytest.approx([row["loss"] for row in log(whole)], abs=1e-6)


def test_resume_refuses_a_checkpoint_with_other_settings(tmp_path, train_jsonl, tiny_model_dir):
    cfg = tiny_config(tiny_model_dir, checkpoint_every=1)
    out = tmp_path / "adapter"

    def stop(step: int, loss: float) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        train_adapter(cfg, train_jsonl, out, device="cpu", on_step=stop)
    with pytest.raises(ValueError, match=r"E407.*learning_rate"):
        train_adapter(tiny_config(tiny_model_dir, checkpoint_every=1, learning_rate=1e-3), train_jsonl, out, device="cpu")
    # a checkpoint from before `share_prefix` existed was trained without it
    import torch

    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    del state["config"]["share_prefix"]
    torch.save(state, out / "checkpoint" / "state.pt")
    with pytest.raises(ValueError, match=r"E407.*share_prefix"):
        train_adapter(cfg, train_jsonl, out, device="cpu")


def test_too_long_examples_are_skipped_and_counted(tmp_path, train_jsonl, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = sorted(
        len(encode_example(tokenizer, e.prompt, e.answer).input_ids) for e in read_instruction_jsonl(train_jsonl)
    )
    with pytest.warns(UserWarning, match="W401"):
        summary = train_adapter(tiny_config(tiny_model_dir, max_steps=1, max_seq_len=lengths[4]), train_jsonl,
                                tmp_path / "a", device="cpu")
    assert summary.skipped_too_long == sum(1 for length in lengths if length > lengths[4])
    assert summary.examples + summary.skipped_too_long == 8
    with pytest.raises(ValueError, match="E406"):
        train_adapter(tiny_config(tiny_model_dir, max_steps=1, max_seq_len=5), train_jsonl, tmp_path / "b", device="cpu")


def test_full_finetune_saves_a_loadable_model(tmp_path, train_jsonl, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    train_adapter(tiny_config(tiny_model_dir, full_finetune=True, max_steps=2), train_jsonl, out, device="cpu")
    assert json.loads((out / "bioselecttune.json").read_text())["full_finetune"] is True
    assert AutoModelForCausalLM.from_pretrained(out).config.hidden_size == 32


def test_bf16_autocast_on_cpu_trains_and_saves_fp32_weights(tmp_path, train_jsonl, tiny_model_dir):
    import torch

    assert isinstance(training_autocast("bf16", "cpu")(), torch.autocast)
    assert not isinstance(training_autocast("auto", "cpu")(), torch.autocast)
    assert training_autocast("auto", "cuda") is not contextlib.nullcontext
    out = tmp_path / "bf16"
    summary = train_adapter(tiny_config(tiny_model_dir, precision="bf16"), train_jsonl, out, device="cpu")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] and summary.steps == 6
    assert {tensor.dtype for tensor in adapter_weights(out).values()} == {torch.float32}


def test_max_minutes_stops_early_saves_the_adapter_and_a_rerun_continues_exactly(tmp_path, train_jsonl, tiny_model_dir):
    import torch

    whole = tmp_path / "whole"
    train_adapter(tiny_config(tiny_model_dir), train_jsonl, whole, device="cpu")

    limited = tmp_path / "limited"
    with pytest.warns(UserWarning, match=r"W403.*step 1 of 6"):
        summary = train_adapter(tiny_config(tiny_model_dir, max_minutes=1e-9), train_jsonl, limited, dev_path=train_jsonl, device="cpu")
    assert (summary.steps, summary.stopped_at_time_limit) == (1, True) and summary.dev_loss is not None
    assert adapter_weights(limited) and (limited / "checkpoint" / "state.pt").is_file()
    settings = json.loads((limited / "bioselecttune.json").read_text())
    assert settings["summary"]["stopped_at_time_limit"] is True
    assert [row["step"] for row in map(json.loads, (limited / "train_log.jsonl").read_text().splitlines())] == [1]

    summary = train_adapter(tiny_config(tiny_model_dir), train_jsonl, limited, device="cpu")  # no limit this time
    assert (summary.resumed_from_step, summary.steps, summary.stopped_at_time_limit) == (1, 6, False)
    assert not (limited / "checkpoint").exists()
    expected, found = adapter_weights(whole), adapter_weights(limited)
    assert all(torch.allclose(expected[k], found[k], rtol=0, atol=1e-7) for k in expected)


def test_negative_max_minutes_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match=r"\[E405\].*max_minutes"):
        tiny_config(tiny_model_dir, max_minutes=-1)


def test_training_can_start_from_a_saved_adapter(tmp_path, train_jsonl, tiny_model_dir):
    import torch

    first = tmp_path / "first"
    train_adapter(tiny_config(tiny_model_dir), train_jsonl, first, device="cpu")
    frozen = tmp_path / "frozen"  # learning rate 0: the weights it saves are the ones it started from
    train_adapter(tiny_config(tiny_model_dir, init_adapter=str(first), learning_rate=0.0, max_steps=1), train_jsonl,
                  frozen, device="cpu")
    expected, found = adapter_weights(first), adapter_weights(frozen)
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[k], found[k]) for k in expected)

    def first_loss(directory: Path) -> float:
        return json.loads((directory / "train_log.jsonl").read_text().splitlines()[0])["loss"]

    assert first_loss(frozen) < first_loss(first)


def test_starting_from_an_adapter_of_another_shape_is_refused(tmp_path, train_jsonl, tiny_model_dir):
    first = tmp_path / "first"
    train_adapter(tiny_config(tiny_model_dir, max_steps=1), train_jsonl, first, device="cpu")
    with pytest.raises(ValueError, match=r"\[E411\].*has r 4 \(training asks for 8\)"):
        train_adapter(tiny_config(tiny_model_dir, init_adapter=str(first), lora_r=8), train_jsonl, tmp_path / "b", device="cpu")
    with pytest.raises(ValueError, match=r"\[E411\].*no adapter_config.json"):
        train_adapter(tiny_config(tiny_model_dir, init_adapter=str(tmp_path)), train_jsonl, tmp_path / "c", device="cpu")
    with pytest.raises(ValueError, match=r"\[E405\].*init_adapter"):
        tiny_config(tiny_model_dir, init_adapter=str(first), full_finetune=True)


def test_training_with_a_shared_prefix_matches_training_without(tmp_path, train_jsonl, tiny_model_dir):
    import torch

    one_label_set = tmp_path / "disease.jsonl"  # so that both runs see the same batches
    one_label_set.write_text("".join(line for line in train_jsonl.read_text().splitlines(True) if '"labels": ["Disease"]' in line))
    assert len(one_label_set.read_text().splitlines()) == 4
    shared = train_adapter(tiny_config(tiny_model_dir, lora_dropout=0.0, batch_size=2), one_label_set, tmp_path / "shared", device="cpu")
    plain = train_adapter(tiny_config(tiny_model_dir, lora_dropout=0.0, batch_size=2, share_prefix=False), one_label_set, tmp_path / "plain", device="cpu")
    assert shared.tokens == plain.tokens
    assert shared.final_loss == pytest.approx(plain.final_loss, rel=1e-3)
    shared_weights, plain_weights = adapter_weights(tmp_path / "shared"), adapter_weights(tmp_path / "plain")
    for name, weight in plain_weights.items():
        assert torch.allclose(weight, shared_weights[name], atol=1e-4), name


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tmp_path, train_jsonl, tiny_model_dir):
    import torch
    from torch._dynamo.utils import counters

    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train_adapter(tiny_config(tiny_model_dir, max_steps=3, lora_dropout=0.0), train_jsonl, eager, device="cpu")
    counters.clear()
    train_adapter(tiny_config(tiny_model_dir, max_steps=3, lora_dropout=0.0, compile=True), train_jsonl, compiled,
                  dev_path=train_jsonl, device="cpu")
    assert counters["stats"]["unique_graphs"] >= 1  # the decoder ran compiled
    expected, found = adapter_weights(eager), adapter_weights(compiled)
    assert expected.keys() == found.keys()
    assert all(torch.allclose(expected[k], found[k], rtol=1e-3, atol=1e-5) for k in expected)


@pytest.mark.gpu
def test_training_steps_wait_for_the_gpu_no_more_often_as_steps_grow(tmp_path, train_jsonl, tiny_model_dir):
    """Reading a GPU value or copying from pageable memory stalls the host; a step should do neither."""
    import warnings

    import torch

    def waits_in_this_package(steps: int):
        cfg = tiny_config(tiny_model_dir, max_steps=steps, log_every=1000, batch_size=2)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_adapter(cfg, train_jsonl, tmp_path / f"steps-{steps}", device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sorted(
            f"{Path(w.filename).name}:{w.lineno}"
            for w in caught
            if "synchroniz" in str(w.message) and "spacy_bioselecttune" in w.filename
        )

    assert waits_in_this_package(8) == waits_in_this_package(4)
