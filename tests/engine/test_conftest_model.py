from transformers import AutoModelForCausalLM, AutoTokenizer

from spacy_bioselecttune.engine.answer_format import build_prompt


def test_tiny_model_tokenizer_round_trips_prompts(tiny_model_dir, fixture_records):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = build_prompt(fixture_records[0].text, ["Disease"])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == prompt
    assert model.config.hidden_size == 32
