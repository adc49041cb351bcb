from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_bioselecttune.cli.convert import instruction_line
from spacy_bioselecttune.engine.ifd import (
    InstructionExample,
    curation_report,
    ifd_value,
    read_instruction_jsonl,
    read_scores,
    repair_scores_file,
    report_markdown,
    score_examples,
    select_hybrid_subset,
    select_ifd_subset,
    select_random_subset,
    select_subset,
    subset_profile,
)
from spacy_bioselecttune.engine.plots import plot_ifd_histogram
from spacy_bioselecttune.engine.records import Record

LABELS = ["Disease", "Chemical"]


def write_instruction_jsonl(path: Path, records, labels=LABELS) -> Path:
    path.write_text("".join(instruction_line(record, labels) + "\n" for record in records), encoding="utf8")
    return path


def make_examples(flags):
    return [InstructionExample(f"e{i}", "p", "[x]" if positive else "[]", positive) for i, positive in enumerate(flags)]


def test_ifd_value_loss_and_perplexity_ratio():
    assert ifd_value(1.0, 2.0) == pytest.approx(0.5)
    assert ifd_value(1.0, 2.0, "ppl_ratio") == pytest.approx(math.exp(-1.0))
    assert ifd_value(math.nan, 2.0) is None
    assert ifd_value(1.0, 0.0) is None
    assert ifd_value(1.0, math.inf) is None
    with pytest.raises(ValueError, match="E404"):
        ifd_value(1.0, 2.0, "ratio")


def test_ifd_metrics_agree_on_exclusion_but_rank_differently():
    a, b = (1.0, 2.0), (3.0, 4.5)  # loss ratios 0.5 and 0.667; perplexity ratios 0.37 and 0.22
    assert ifd_value(*a) < ifd_value(*b)
    assert ifd_value(*a, "ppl_ratio") > ifd_value(*b, "ppl_ratio")
    assert (ifd_value(2.0, 1.0) >= 1) and (ifd_value(2.0, 1.0, "ppl_ratio") >= 1)


ifd_values = st.one_of(st.none(), st.floats(0.0, 1.5, allow_nan=False), st.sampled_from([1.0, 0.5]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), ifd_values), max_size=40), st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]))
def test_select_hybrid_subset_keeps_top_positives_and_every_negative(items, ratio):
    examples = make_examples([positive for positive, _ in items])
    ifds = {e.id: value for e, (_, value) in zip(examples, items)}
    selection = select_hybrid_subset(examples, ifds, ratio=ratio)
    kept = set(selection.kept_ids)
    eligible = [e for e in examples if e.positive and ifds[e.id] is not None and ifds[e.id] < 1]
    kept_positives = [e for e in examples if e.positive and e.id in kept]
    assert len(kept_positives) == math.floor(ratio * len(eligible) + 1e-9)
    assert all(e.id in kept for e in examples if not e.positive)
    assert all(e in eligible for e in kept_positives)
    dropped = [e for e in eligible if e.id not in kept]
    if kept_positives and dropped:
        assert min(ifds[e.id] for e in kept_positives) >= max(ifds[e.id] for e in dropped)
    counts = selection.counts["positive"]
    assert counts.excluded_ifd_ge_1 == sum(1 for e in examples if e.positive and ifds[e.id] is not None and ifds[e.id] >= 1)
    assert counts.excluded_nonfinite == sum(1 for e in examples if e.positive and ifds[e.id] is None)
    assert counts.eligible == len(eligible)
    negatives = selection.counts["negative"]
    assert negatives.eligible == negatives.kept == negatives.total  # negatives are not filtered by IFD
    assert selection.kept_ids == [e.id for e in examples if e.id in kept]


def test_select_hybrid_subset_samples_negatives_with_seed():
    examples = make_examples([True] * 4 + [False] * 10)
    ifds = {e.id: 0.1 * (i % 9) for i, e in enumerate(examples)}
    first = select_hybrid_subset(examples, ifds, ratio=0.5, negatives_ratio=0.3, seed=3)
    again = select_hybrid_subset(examples, ifds, ratio=0.5, negatives_ratio=0.3, seed=3)
    other = [select_hybrid_subset(examples, ifds, 0.5, 0.3, seed).kept_ids for seed in range(10)]
    assert first.counts["negative"].kept == 3
    assert first.counts["positive"].kept == 2
    assert first.kept_ids == again.kept_ids
    assert len({tuple(ids) for ids in other}) > 1


def test_select_ifd_subset_ranks_all_eligible_examples():
    examples = make_examples([True, True, False, False, True])
    ifds = {"e0": 0.2, "e1": 0.9, "e2": 0.8, "e3": None, "e4": 1.2}
    selection = select_ifd_subset(examples, ifds, ratio=0.67)
    assert selection.kept_ids == ["e1", "e2"]
    assert selection.counts["negative"].excluded_nonfinite == 1
    assert selection.counts["positive"].excluded_ifd_ge_1 == 1


def test_select_random_subset_matches_hybrid_counts():
    examples = make_examples([True] * 9 + [False] * 6)
    ifds = {e.id: (i % 7) / 6 for i, e in enumerate(examples)}
    hybrid = select_hybrid_subset(examples, ifds, 0.5, 0.5, seed=1)
    control = select_random_subset(examples, ifds, 0.5, 0.5, seed=1)
    for name in ("positive", "negative"):
        assert control.counts[name].kept == hybrid.counts[name].kept
    assert control.kept_ids == select_random_subset(examples, ifds, 0.5, 0.5, seed=1).kept_ids
    assert select_subset("full", examples, ifds).kept_ids == [e.id for e in examples]
    with pytest.raises(ValueError, match="E404"):
        select_subset("best", examples, ifds)
    with pytest.raises(ValueError, match="E405"):
        select_hybrid_subset(examples, ifds, ratio=1.5)


def test_read_instruction_jsonl_names_bad_lines(tmp_path):
    good = {"id": "a", "prompt": "p", "answer": "[]"}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"E401.*line 2"):
        read_instruction_jsonl(path)
    path.write_text(json.dumps({"id": "a", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"E400.*line 1.*answer"):
        read_instruction_jsonl(path)
    path.write_text(json.dumps(good) + "\n")
    assert read_instruction_jsonl(path)[0].positive is False


def test_repair_scores_file_cuts_only_a_truncated_last_line(tmp_path):
    path = tmp_path / "scores.jsonl"
    lines = [json.dumps({"id": i, "loss_cond": 1.0, "loss_uncond": 2.0, "ifd": 0.5}) + "\n" for i in "ab"]
    path.write_text(lines[0] + lines[1] + '{"id": "c", "loss_co')
    with pytest.warns(UserWarning, match="W400"):
        assert repair_scores_file(path) == {"a", "b"}
    assert path.read_text() == lines[0] + lines[1]
    assert read_scores(path, "ppl_ratio")["a"].ifd == pytest.approx(math.exp(-1.0))
    path.write_text(lines[0] + "not json\n" + lines[1])
    with pytest.raises(ValueError, match=r"E402.*line 2"):
        repair_scores_file(path)


def test_repair_scores_file_refuses_scores_of_another_weak_model(tmp_path):
    path = tmp_path / "scores.jsonl"
    line = {"id": "a", "model": "gemma3-270m", "loss_cond": 1.0, "loss_uncond": 2.0, "ifd": 0.5}
    path.write_text(json.dumps(line) + "\n")
    assert repair_scores_file(path, "gemma3-270m") == {"a"}
    with pytest.raises(ValueError, match=r"E409.*line 1.*gemma3-270m.*smollm2-135m"):
        repair_scores_file(path, "smollm2-135m")


def test_score_examples_matches_a_plain_one_at_a_time_computation(tmp_path, tiny_model_dir, fixture_records):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # two label lists, so batches have different instructions
    disease_only = [Record(f"{r.id}-d", r.text, tuple(e for e in r.entities if e.label == "Disease")) for r in fixture_records]
    examples = read_instruction_jsonl(write_instruction_jsonl(tmp_path / "in.jsonl", fixture_records))
    examples += read_instruction_jsonl(write_instruction_jsonl(tmp_path / "disease.jsonl", disease_only, ["Disease"]))
    out = tmp_path / "scores.jsonl"
    run = score_examples(examples, out, str(tiny_model_dir), batch_size=3, device="cpu")
    assert run.scored == len(examples)
    scores = read_scores(out)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()

    def mean_loss(ids, first_scored):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        nll = -torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
        return nll[first_scored - 1 :].mean().item()

    assert tokenizer("", add_special_tokens=True)["input_ids"] == []  # no BOS: L(y) starts at answer token 2
    for example in examples:
        prompt = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(example.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        loss_cond = mean_loss(prompt + answer, len(prompt))
        loss_uncond = mean_loss(answer, 1)
        score = scores[example.id]
        assert score.loss_cond == pytest.approx(loss_cond, abs=1e-4)
        assert score.loss_uncond == pytest.approx(loss_uncond, abs=1e-4)
        assert score.ifd == pytest.approx(loss_cond / loss_uncond, abs=1e-4)


def test_curation_report_and_histogram(tmp_path):
    examples = make_examples([True, True, True, False])
    ifds = {"e0": 0.3, "e1": 0.7, "e2": None, "e3": 0.5}
    selection = select_hybrid_subset(examples, ifds, ratio=0.5)
    report = curation_report(examples, ifds, selection, {"strategy": "hybrid"})
    assert report["counts"]["positive"] == {
        "total": 3, "excluded_ifd_ge_1": 0, "excluded_nonfinite": 1, "eligible": 2, "kept": 1, "dropped": 2,
    }
    assert [item["id"] for item in report["highest_kept"]] == ["e1", "e3"]
    assert report["ifd"]["dropped positives"]["max"] == 0.3
    markdown = report_markdown(report, "ifd_histogram.png")
    assert "| positive | 3 | 0 | 1 | 2 | 1 | 2 |" in markdown
    png = plot_ifd_histogram({"kept": [0.2, 0.7], "dropped": [0.1, 1.3]}, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_subset_profile_counts_names_and_characters_of_kept_and_dropped():
    def example(index, names, text):
        answer = "[" + ", ".join(f'{{"entity": "Disease", "name": "{n}"}}' for n in names) + "]"
        return InstructionExample(f"e{index}", "p", answer, bool(names), ("Disease",), text)

    examples = [
        example(0, ["asthma", "gout"], "asthma and gout"),
        example(1, ["flu"], "flu"),
        example(2, [], "no disease here"),
    ]
    selection = select_hybrid_subset(examples, {"e0": 0.8, "e1": 0.2, "e2": 0.5}, ratio=0.5)
    profile = subset_profile(examples, selection)
    assert profile["kept positives"] == {"count": 1, "names": 2, "names_per_example": 2.0, "characters_per_example": 15.0}
    assert profile["dropped positives"] == {"count": 1, "names": 1, "names_per_example": 1.0, "characters_per_example": 3.0}
    assert profile["kept negatives"]["count"] == 1 and profile["kept negatives"]["names"] == 0
    assert profile["dropped negatives"] == {"count": 0, "names": 0, "names_per_example": None, "characters_per_example": None}
    markdown = report_markdown(curation_report(examples, {"e0": 0.8, "e1": 0.2, "e2": 0.5}, selection, {}))
    assert "| kept positives | 1 | 2 | 2.0000 | 15.0000 |" in markdown
