from __future__ import annotations

import json

import pytest

from spacy_bioselecttune.engine.export import export_adapter


@pytest.fixture
def trained_adapter(tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero B matrices, as `train` would leave it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    (out / "bioselecttune.json").write_text(json.dumps({"format_version": 1, "labels": ["Disease"]}))
    (out / "train_log.jsonl").write_text('{"step": 1}\n')
    return out


def test_export_casts_weights_and_keeps_settings_and_records(trained_adapter, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    metrics = tmp_path / "ncbi-disease" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text('{"ents_f": 0.5}')
    out = export_adapter(trained_adapter, tmp_path / "shipped", records=[metrics])
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}
    assert json.loads((out / "bioselecttune.json").read_text()) == {"format_version": 1, "labels": ["Disease"], "weights_dtype": "bfloat16"}
    assert (out / "train_log.jsonl").read_text() == '{"step": 1}\n'
    assert (out / "records" / "ncbi-disease" / "metrics.json").read_text() == '{"ents_f": 0.5}'

    ids = torch.tensor([[1, 5, 9, 3, 7]])
    logits = {}
    for name, directory in (("fp32", trained_adapter), ("bf16", out)):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), directory).eval()
        with torch.no_grad():
            logits[name] = model(ids).logits
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
    assert not torch.allclose(logits["fp32"], base_logits, atol=1e-3)
    assert torch.allclose(logits["fp32"], logits["bf16"], atol=2e-2)


def test_export_names_what_is_missing_and_bad_dtypes(trained_adapter, tmp_path):
    (trained_adapter / "bioselecttune.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"E306.*bioselecttune\.json"):
        export_adapter(trained_adapter, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="E306"):
        export_adapter(tmp_path, tmp_path / "out")


def test_export_rejects_a_non_float_dtype(trained_adapter, tmp_path):
    with pytest.raises(ValueError, match=r"E010.*dtype"):
        export_adapter(trained_adapter, tmp_path / "out", dtype="int8")
    with pytest.raises(ValueError, match=r"E010.*dtype"):
        export_adapter(trained_adapter, tmp_path / "out", dtype="no_such_type")
