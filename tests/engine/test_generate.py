from __future__ import annotations

from pathlib import Path

import pytest

from spacy_bioselecttune.engine.answer_format import answer_for_record, build_prompt
from spacy_bioselecttune.engine.generate import ArrayCloseTracker, Generator

LABELS = ["Disease", "Chemical"]
TRAILER = " and then some more words"


@pytest.fixture(scope="module")
def trained_model_dir(tiny_model_dir, fixture_records, answer_memorizer, tmp_path_factory) -> Path:
    """The tiny model fitted to answer the fixture prompts, each answer followed by text, not EOS."""
    pairs = [(build_prompt(r.text, LABELS), answer_for_record(r) + TRAILER) for r in fixture_records]
    return answer_memorizer(tiny_model_dir, pairs, tmp_path_factory.mktemp("tiny-trained"), steps=150, lr=1e-2)


LOOPING_TEXT = "Fever and cough with fever and cough."


@pytest.fixture(scope="module")
def looping_model_dir(tiny_model_dir, fixture_records, answer_memorizer, tmp_path_factory) -> Path:
    """The tiny model fitted to answer LOOPING_TEXT by naming its two diseases over and over."""
    looping = "[" + _items("Fever", "cough", "Fever", "cough", "Fever", "cough", "Fever", "cough").rstrip(", ")
    pairs = [(build_prompt(LOOPING_TEXT, ["Disease"]), looping)]
    pairs += [(build_prompt(r.text, LABELS), answer_for_record(r)) for r in fixture_records]
    return answer_memorizer(tiny_model_dir, pairs, tmp_path_factory.mktemp("tiny-looping"), steps=150, lr=1e-2)


@pytest.mark.parametrize("decoding", ["dynamic", "static", "continuous", "static-continuous"])
def test_a_looping_answer_stops_at_its_fourth_repeated_item(looping_model_dir, fixture_records, decoding):
    generator = Generator(str(looping_model_dir), device="cpu", batch_size=2, max_new_tokens=120, decoding=decoding)
    prompts = [build_prompt(LOOPING_TEXT, ["Disease"])] + [build_prompt(r.text, LABELS) for r in fixture_records]
    outputs = generator.generate(prompts)
    assert outputs[0].rstrip(", ") == "[" + _items("Fever", "cough", "Fever", "cough", "Fever", "cough").rstrip(", ")  # the token may hold the comma
    assert outputs[1:] == [answer_for_record(r) for r in fixture_records]
    assert generator.times.looping_answers == 1


def _prompts(records):
    return [build_prompt(r.text, LABELS) for r in records] + [build_prompt("Short.", LABELS)]


def test_generation_stops_when_the_array_closes(trained_model_dir, fixture_records):
    generator = Generator(str(trained_model_dir), device="cpu", batch_size=4, max_new_tokens=60)
    outputs = generator.generate([build_prompt(r.text, LABELS) for r in fixture_records])
    assert outputs == [answer_for_record(r) for r in fixture_records]


def test_outputs_agree_across_batch_sizes_and_keep_input_order(trained_model_dir, fixture_records):
    prompts = _prompts(fixture_records)
    single = Generator(str(trained_model_dir), device="cpu", batch_size=1, max_new_tokens=30).generate(prompts)
    batched = Generator(str(trained_model_dir), device="cpu", batch_size=4, max_new_tokens=30).generate(prompts)
    reversed_outputs = Generator(str(trained_model_dir), device="cpu", batch_size=4, max_new_tokens=30).generate(
        prompts[::-1]
    )
    assert single == batched
    assert reversed_outputs == batched[::-1]
    assert batched[:4] == [answer_for_record(r) for r in fixture_records]


def test_prefix_cache_gives_the_same_tokens(trained_model_dir, tiny_model_dir, fixture_records):
    prompts = _prompts(fixture_records)
    for model_dir in (trained_model_dir, tiny_model_dir):
        with_cache = Generator(str(model_dir), device="cpu", batch_size=3, max_new_tokens=25)
        without_cache = Generator(str(model_dir), device="cpu", batch_size=3, max_new_tokens=25, use_prefix_cache=False)
        assert with_cache.generate_token_ids(prompts) == without_cache.generate_token_ids(prompts)
        assert with_cache.generate_token_ids(prompts[:2]) == without_cache.generate_token_ids(prompts[:2])
        for prompt in prompts:
            assert with_cache.generate_token_ids([prompt]) == without_cache.generate_token_ids([prompt])


def test_max_new_tokens_caps_each_completion(tiny_model_dir, fixture_records):
    generator = Generator(str(tiny_model_dir), device="cpu", batch_size=2, max_new_tokens=5)
    outputs = generator.generate_token_ids(_prompts(fixture_records))
    assert all(len(ids) <= 5 for ids in outputs)
    assert max(len(ids) for ids in outputs) == 5


def test_generator_loads_lazily(tiny_model_dir):
    generator = Generator(str(tiny_model_dir), device="cpu")
    assert generator._model is None
    assert generator.tokenizer.padding_side == "left"
    assert generator.model is not None
    assert generator.generate([]) == []


@pytest.mark.parametrize(
    "text,closes_at",
    [
        ("[]", 2),
        ('[{"entity": "Disease", "name": "a]b"}] trailing', 38),
        ('[{"name": "say \\"]\\" here"}]', 28),
        ('] ["x", ["y"]]', 14),
        ("no array here", None),
        ('"[" [', None),
    ],
)
def test_array_close_tracker(text, closes_at):
    tracker = ArrayCloseTracker()
    closed = [i + 1 for i, char in enumerate(text) if tracker.feed(char)]
    assert (closed[0] if closed else None) == closes_at


def test_array_close_tracker_reads_chunks():
    tracker = ArrayCloseTracker()
    assert not tracker.feed('[{"entity": "Dis')
    assert not tracker.feed('ease", "name": "x')
    assert tracker.feed('"}],')


def _items(*names: str) -> str:
    return "".join(f'{{"entity": "Disease", "name": "{name}"}}, ' for name in names)


def test_array_close_tracker_stops_an_answer_going_round_a_loop():
    tracker = ArrayCloseTracker()
    assert not tracker.feed("[" + _items("tumour", "T - PLL", "tumour", "T - PLL", "tumour"))  # three repeats in a row
    assert tracker.feed(_items("T - PLL"))  # the fourth
    assert tracker.looped


@pytest.mark.parametrize(
    "answer",
    [
        "[" + _items("a", "a", "a", "a", "b", "a", "a", "a", "c", "a") + "]",  # never four repeats in a row
        "[" + _items("a", "A", "b", "B", "c") + "]",  # names differ in case: not repeats
        '[{"entity": "Disease", "name": "{x}"}, {"entity": "Disease", "name": "{x}"}, "{", "{"]',  # braces in strings
    ],
)
def test_array_close_tracker_lets_repeats_short_of_a_loop_run_to_the_close(answer):
    tracker = ArrayCloseTracker()
    closed = [i + 1 for i, char in enumerate(answer) if tracker.feed(char)]
    assert closed[:1] == [len(answer)]
    assert not tracker.looped


@pytest.mark.slow
def test_generate_with_the_embedded_model():
    generator = Generator(device="cpu", batch_size=2, max_new_tokens=24)
    prompts = [build_prompt(text, ["Disease"]) for text in ("Cystic fibrosis is a genetic disease.", "Nothing here.")]
    outputs = generator.generate(prompts)
    assert len(outputs) == 2
    assert all(isinstance(output, str) and output.strip() for output in outputs)
    generator.use_prefix_cache = False
    assert generator.generate(prompts) == outputs


def test_prepare_is_applied_once_to_the_loaded_model(tiny_model_dir):
    from spacy_bioselecttune.engine.loading import int8_linear_layers

    seen = []

    def prepare(model):
        seen.append(model)
        return int8_linear_layers(model)

    generator = Generator(str(tiny_model_dir), device="cpu", max_new_tokens=4, prepare=prepare)
    assert len(generator.generate(["Aspirin", "Gout"])) == 2
    generator.generate(["Flu"])
    assert len(seen) == 1
    assert type(generator.model.model.layers[0].self_attn.q_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")


def test_static_decoding_gives_the_dynamic_loops_tokens(trained_model_dir, tiny_model_dir, fixture_records):
    prompts = _prompts(fixture_records)
    for model_dir in (trained_model_dir, tiny_model_dir):
        for batch_size, prefix in ((3, True), (2, False), (8, True)):
            settings = dict(device="cpu", batch_size=batch_size, max_new_tokens=25, use_prefix_cache=prefix)
            dynamic = Generator(str(model_dir), decoding="dynamic", **settings)
            static = Generator(str(model_dir), decoding="static", **settings)
            assert static.generate_token_ids(prompts) == dynamic.generate_token_ids(prompts)
            # later calls reuse the decoder (fewer rows, shorter prompts) or replace it
            assert static.generate_token_ids(prompts[:2]) == dynamic.generate_token_ids(prompts[:2])
            assert static.generate_token_ids(prompts[-1:]) == dynamic.generate_token_ids(prompts[-1:])
    static = Generator(str(trained_model_dir), device="cpu", batch_size=4, max_new_tokens=60, decoding="static")
    assert static.generate(prompts[:4]) == [answer_for_record(r) for r in fixture_records]


def test_compiled_static_decoding_gives_the_dynamic_loops_tokens(tiny_model_dir, fixture_records):
    prompts = _prompts(fixture_records)
    settings = dict(device="cpu", batch_size=3, max_new_tokens=12)
    compiled = Generator(str(tiny_model_dir), decoding="compiled", **settings)
    assert compiled.generate_token_ids(prompts) == Generator(str(tiny_model_dir), **settings).generate_token_ids(prompts)
    assert compiled._decoder._run_step != compiled._decoder._step  # the step runs through torch.compile


def test_continuous_batching_gives_the_dynamic_loops_tokens(trained_model_dir, tiny_model_dir, fixture_records):
    prompts = _prompts(fixture_records) * 3
    for model_dir in (trained_model_dir, tiny_model_dir):
        for batch_size, prefix, max_new_tokens in ((3, True, 25), (2, False, 25), (4, True, 7), (32, True, 25)):
            settings = dict(device="cpu", batch_size=batch_size, max_new_tokens=max_new_tokens, use_prefix_cache=prefix)
            expected = Generator(str(model_dir), decoding="dynamic", **settings).generate_token_ids(prompts)
            for draft_tokens in (0, 8):
                continuous = Generator(str(model_dir), decoding="continuous", draft_tokens=draft_tokens, **settings)
                assert continuous.generate_token_ids(prompts) == expected
                assert continuous.generate_token_ids(prompts[-1:]) == expected[-1:]
                assert max(map(len, continuous.generate_token_ids(prompts))) <= max_new_tokens
    continuous = Generator(str(trained_model_dir), device="cpu", batch_size=3, max_new_tokens=60, decoding="continuous")
    assert continuous.generate(prompts[:4]) == [answer_for_record(r) for r in fixture_records]
    # prompts joined a running batch: more prefills than batches of 3, and fuller decode steps than the dynamic loop's
    dynamic = Generator(str(trained_model_dir), device="cpu", batch_size=3, max_new_tokens=60, decoding="dynamic")
    dynamic.generate(prompts)
    continuous.times = type(continuous.times)()
    continuous.generate(prompts)
    assert continuous.times.batches > -(-len(prompts) // 3)
    assert continuous.times.decode_steps < dynamic.times.decode_steps
    assert continuous.times.row_steps / continuous.times.decode_steps > dynamic.times.row_steps / dynamic.times.decode_steps


def test_drafts_from_the_prompt_cut_the_decode_steps_of_continuous_batching(trained_model_dir, fixture_records):
    prompts = _prompts(fixture_records)[: len(fixture_records)]
    settings = dict(device="cpu", batch_size=4, max_new_tokens=60, decoding="continuous")
    plain = Generator(str(trained_model_dir), draft_tokens=0, **settings)
    drafting = Generator(str(trained_model_dir), draft_tokens=8, **settings)
    assert drafting.generate(prompts) == plain.generate(prompts) == [answer_for_record(r) for r in fixture_records]
    # the answers' names and JSON are copied from the prompt and the template: drafts are kept, so fewer steps
    assert plain.times.drafted_tokens == 0 and 0 < drafting.times.accepted_tokens < drafting.times.drafted_tokens
    assert drafting.times.decode_steps < plain.times.decode_steps
    # a row-step yields its token and its kept drafts (those after the answer's end are dropped)
    assert drafting.times.row_steps + drafting.times.accepted_tokens >= plain.times.row_steps


def test_refilling_static_decoding_gives_the_dynamic_loops_tokens(trained_model_dir, tiny_model_dir, fixture_records, monkeypatch):
    from spacy_bioselecttune.engine.static_decode import StaticDecoder

    shifts = []
    relocate = StaticDecoder._relocate
    monkeypatch.setattr(StaticDecoder, "_relocate", lambda self, slot: shifts.append(slot - self._write_slot) or relocate(self, slot))
    prompts = _prompts(fixture_records) * 6
    for model_dir in (trained_model_dir, tiny_model_dir):
        for batch_size, prefix, max_new_tokens in ((3, True, 25), (2, False, 25), (4, True, 4), (32, True, 25)):
            settings = dict(device="cpu", batch_size=batch_size, max_new_tokens=max_new_tokens, use_prefix_cache=prefix)
            expected = Generator(str(model_dir), decoding="dynamic", **settings).generate_token_ids(prompts)
            refilling = Generator(str(model_dir), decoding="static-continuous", **settings)
            assert refilling.generate_token_ids(prompts) == expected
            assert refilling.generate_token_ids(prompts[-1:]) == expected[-1:]
    assert any(shift < 0 for shift in shifts)  # live rows were moved to the front of a full cache
    assert any(shift > 0 for shift in shifts)  # and behind a longer prompt's suffix
    refilling = Generator(str(trained_model_dir), device="cpu", batch_size=3, max_new_tokens=60, decoding="static-continuous")
    assert refilling.generate(prompts[:4]) == [answer_for_record(r) for r in fixture_records]
    static = Generator(str(trained_model_dir), device="cpu", batch_size=3, max_new_tokens=60, decoding="static")
    static.generate(prompts)
    refilling.times = type(refilling.times)()
    refilling.generate(prompts)
    assert refilling.times.decode_steps < static.times.decode_steps  # finished rows took waiting prompts


def test_compiled_refilling_decoding_gives_the_dynamic_loops_tokens(tiny_model_dir, fixture_records):
    prompts = _prompts(fixture_records) * 2
    settings = dict(device="cpu", batch_size=3, max_new_tokens=12)
    compiled = Generator(str(tiny_model_dir), decoding="compiled-continuous", **settings)
    assert compiled.generate_token_ids(prompts) == Generator(str(tiny_model_dir), **settings).generate_token_ids(prompts)
    assert compiled._decoder._run_step != compiled._decoder._step


def test_continuous_batching_refuses_sliding_window_caches(tiny_model_dir, monkeypatch):
    import spacy_bioselecttune.engine.generate as generate_module

    monkeypatch.setattr(generate_module, "supports_joined_rows", lambda cache: False)
    with pytest.raises(ValueError, match=r"\[E010\].*continuous.*sliding-window"):
        Generator(str(tiny_model_dir), device="cpu", decoding="continuous").generate(["Gout."])


def test_static_decoder_is_reused_while_batches_fit(tiny_model_dir, fixture_records):
    prompts = _prompts(fixture_records)
    generator = Generator(str(tiny_model_dir), device="cpu", batch_size=4, max_new_tokens=10, decoding="static")
    generator.generate_token_ids(prompts)
    first = generator._decoder
    assert first.batch_size == 4 and first.cache_length % 64 == 0 and first.graph is None
    generator.generate_token_ids(prompts[1:])
    assert generator._decoder is first
    generator.generate_token_ids(prompts[:1])  # one prompt: a one-row decoder
    assert generator._decoder.batch_size == 1


def test_decoding_setting_is_checked(tiny_model_dir):
    with pytest.raises(ValueError, match=r"\[E010\].*decoding"):
        Generator(str(tiny_model_dir), decoding="graphs")
    assert Generator(str(tiny_model_dir), device="cpu", decoding="static").resolved_decoding == "static"


def test_auto_decoding_refills_rows_the_way_the_device_suits(tiny_model_dir, fixture_records, monkeypatch):
    import spacy_bioselecttune.engine.generate as generate_module

    prompts = _prompts(fixture_records) * 3
    settings = dict(device="cpu", batch_size=4, max_new_tokens=12)
    expected = Generator(str(tiny_model_dir), decoding="dynamic", **settings).generate_token_ids(prompts)
    auto = Generator(str(tiny_model_dir), **settings)
    assert auto.resolved_decoding == "continuous"  # on a CPU finished rows must leave: they cost compute
    assert auto.generate_token_ids(prompts) == expected and auto._decoder is None
    on_cuda = Generator(str(tiny_model_dir), **settings)
    monkeypatch.setattr(on_cuda, "_graphs_available", lambda: True)
    assert on_cuda.resolved_decoding == "static-continuous"
    # sliding-window caches (Gemma 3): no error, auto falls back to the dynamic loop on either device
    monkeypatch.setattr(generate_module, "supports_static_cache", lambda model: False)
    monkeypatch.setattr(generate_module, "supports_joined_rows", lambda cache: False)
    sliding_on_cuda = Generator(str(tiny_model_dir), **settings)
    monkeypatch.setattr(sliding_on_cuda, "_graphs_available", lambda: True)
    assert sliding_on_cuda.resolved_decoding == "dynamic"
    sliding = Generator(str(tiny_model_dir), **settings)
    assert sliding.resolved_decoding == "dynamic"
    assert sliding.generate_token_ids(prompts[:2]) == expected[:2]


@pytest.mark.gpu
def test_cuda_graph_decoding_gives_the_dynamic_loops_answers(trained_model_dir, fixture_records):
    prompts = _prompts(fixture_records) * 5
    dynamic = Generator(str(trained_model_dir), device="cuda", batch_size=8, max_new_tokens=40, decoding="dynamic")
    expected = dynamic.generate(prompts)
    for decoding in ("static", "compiled", "static-continuous", "compiled-continuous"):
        graphed = Generator(str(trained_model_dir), device="cuda", batch_size=8, max_new_tokens=40, decoding=decoding)
        assert graphed.generate(prompts) == expected
        assert graphed._decoder.graph is not None


def test_a_failed_graph_capture_falls_back_to_the_dynamic_loop(tiny_model_dir, fixture_records, monkeypatch):
    import spacy_bioselecttune.engine.generate as generate_module

    class FailingCapture:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("operation not permitted when stream is capturing")

    prompts = _prompts(fixture_records)
    expected = Generator(str(tiny_model_dir), device="cpu", batch_size=2, max_new_tokens=10).generate_token_ids(prompts)
    generator = Generator(str(tiny_model_dir), device="cpu", batch_size=2, max_new_tokens=10, decoding="static")
    monkeypatch.setattr(generate_module, "StaticDecoder", FailingCapture)
    monkeypatch.setattr(generator, "_graphs_available", lambda: True)
    with pytest.warns(UserWarning, match=r"W004.*not permitted"):
        assert generator.generate_token_ids(prompts) == expected
    assert generator.resolved_decoding == "dynamic"
