from __future__ import annotations

import pytest

from spacy_bioselecttune.engine.answer_format import answer_for_record, build_prompt
from spacy_bioselecttune.engine.encoding import encode_example, encode_examples, encode_prompt, encode_prompts, leading_special_ids

LABELS = ["Disease", "Chemical"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from spacy_bioselecttune.engine.loading import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def test_encode_example_layout(tokenizer, fixture_records):
    record = fixture_records[1]
    prompt, answer = build_prompt(record.text, LABELS), answer_for_record(record)
    encoded = encode_example(tokenizer, prompt, answer)
    assert encoded.input_ids[: encoded.answer_start] == encode_prompt(tokenizer, prompt)
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    answer_ids = encoded.input_ids[encoded.answer_start : -1]
    assert tokenizer.decode(answer_ids) == answer
    assert encoded.answer_length == len(answer_ids) + 1


def test_encode_prompt_has_no_special_tokens_without_bos(tokenizer):
    assert leading_special_ids(tokenizer) == []
    ids = encode_prompt(tokenizer, "Aspirin")
    assert tokenizer.decode(ids) == "Aspirin"
    assert tokenizer.eos_token_id not in ids


def test_encode_example_empty_prompt_starts_answer_at_zero(tokenizer):
    encoded = encode_example(tokenizer, "", "[]")
    assert encoded.answer_start == 0
    assert tokenizer.decode(encoded.input_ids[:-1]) == "[]"


def test_encode_prompt_prepends_bos_when_the_tokenizer_adds_it(tiny_model_dir):
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", bos)]
    )
    assert leading_special_ids(tokenizer) == [bos]
    encoded = encode_example(tokenizer, "Text", "[]")
    assert encoded.input_ids[0] == bos
    assert encoded.input_ids.count(bos) == 1
    assert encode_example(tokenizer, "", "[]").answer_start == 1


def test_encode_examples_matches_one_at_a_time(tokenizer, fixture_records):
    prompts = [build_prompt(record.text, LABELS) for record in fixture_records] + [""]
    answers = [answer_for_record(record) for record in fixture_records] + ["[]"]
    assert encode_examples(tokenizer, prompts, answers) == [encode_example(tokenizer, p, a) for p, a in zip(prompts, answers)]
    assert encode_examples(tokenizer, [], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        encode_examples(tokenizer, ["a", "b"], ["[]"])


def test_encode_prompts_matches_one_at_a_time(tiny_model_dir, fixture_records):
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tokenizer.bos_token_id)]
    )
    prompts = [build_prompt(record.text, LABELS) for record in fixture_records] + [""]
    assert encode_prompts(tokenizer, prompts) == [encode_prompt(tokenizer, prompt) for prompt in prompts]
    assert encode_prompts(tokenizer, prompts)[0][0] == tokenizer.bos_token_id
    assert encode_prompts(tokenizer, []) == []
