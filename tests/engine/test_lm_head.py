import torch
from transformers import LlamaConfig, LlamaForCausalLM

from spacy_bioselecttune.engine.lm_head import use_transposed_head

CONFIG = LlamaConfig(num_hidden_layers=1, num_key_value_heads=1, num_attention_heads=2, hidden_size=8,
                     intermediate_size=16, vocab_size=50)


def test_transposed_head_gives_the_linear_heads_logits():
    torch.manual_seed(0)
    model = LlamaForCausalLM(CONFIG).eval()
    input_ids = torch.randint(0, CONFIG.vocab_size, (3, 5))
    with torch.inference_mode():
        expected = model(input_ids=input_ids).logits
        transposed = use_transposed_head(model)
        assert type(transposed.get_output_embeddings()).__name__ == "TransposedHead"
        logits = transposed(input_ids=input_ids).logits
        last = transposed(input_ids=input_ids, logits_to_keep=1).logits
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(last, expected[:, -1:])
    assert torch.equal(last[:, -1].argmax(-1), expected[:, -1].argmax(-1))


def test_heads_other_than_a_plain_linear_layer_are_kept():
    class ScaledHead(torch.nn.Linear):
        pass

    model = LlamaForCausalLM(CONFIG)
    head = ScaledHead(CONFIG.hidden_size, CONFIG.vocab_size, bias=False)
    model.set_output_embeddings(head)
    assert use_transposed_head(model).get_output_embeddings() is head
