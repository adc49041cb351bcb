import torch
from transformers import DynamicCache, LlamaConfig

from spacy_bioselecttune.engine.continuous_decode import _Rows, supports_joined_rows

CONFIG = LlamaConfig(num_hidden_layers=2, num_key_value_heads=1, num_attention_heads=1, hidden_size=4)


def _rows(prompts, mask):
    """Rows whose cached keys and values number each slot (1-based) and are 0 where `mask` is 0."""
    mask = torch.tensor(mask)
    cache = DynamicCache(config=CONFIG)
    states = (torch.arange(1, mask.shape[1] + 1) * mask)[:, None, :, None].float().expand(-1, 1, -1, 4).contiguous()
    for layer in range(CONFIG.num_hidden_layers):
        cache.update(states.clone(), states.clone(), layer)
    size = len(prompts)
    return _Rows(list(prompts), [1] * size, cache, mask, torch.arange(size), mask.sum(1) - 1)


def test_joined_rows_are_left_padded_to_the_longer_cache():
    running = _rows([0, 1], [[1, 1, 1, 1], [0, 1, 1, 1]])
    running.join(_rows([2], [[1, 1]]))
    assert running.prompts == [0, 1, 2] and running.counts == [1, 1, 1]
    assert running.mask.tolist() == [[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]]
    keys = running.cache.layers[1].keys[:, 0, :, 0]
    assert keys.tolist() == [[1, 2, 3, 4], [0, 2, 3, 4], [0, 0, 1, 2]]
    assert running.positions.tolist() == [3, 2, 1]
    shorter = _rows([3], [[1, 1]])
    shorter.join(_rows([4], [[0, 1, 1]]))  # the running rows are padded when the newcomers' cache is longer
    assert shorter.mask.tolist() == [[0, 1, 1], [0, 1, 1]]


def test_selected_rows_drop_the_slots_no_row_attends_to():
    running = _rows([0, 1, 2], [[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]])
    running.select([2, 1])
    running.trim()
    assert running.prompts == [2, 1] and running.tokens.tolist() == [2, 1]
    assert running.mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert running.cache.layers[0].keys[:, 0, :, 0].tolist() == [[0, 3, 4], [2, 3, 4]]
    assert running.cache.get_seq_length() == 3
    running.trim()  # nothing more to drop
    assert running.mask.shape == (2, 3)


def test_only_full_attention_caches_can_join_rows():
    assert supports_joined_rows(DynamicCache(config=CONFIG))
    sliding = LlamaConfig(**{**CONFIG.to_dict(), "sliding_window": 2, "layer_types": ["sliding_attention", "full_attention"]})
    assert not supports_joined_rows(DynamicCache(config=sliding))
