import json

import pytest

from spacy_bioselecttune.engine.ifd import read_instruction_jsonl
from spacy_bioselecttune.engine.mixing import mix_instruction_files


def write_jsonl(path, prefix, count, labels):
    with open(path, "w", encoding="utf8") as out:
        for i in range(count):
            answer = "[]" if i % 2 else json.dumps([{"entity": labels[0], "name": "x"}])
            out.write(json.dumps({"id": f"{prefix}/{i}", "prompt": f"{prefix} {i}", "answer": answer, "labels": labels}) + "\n")
    return path


@pytest.fixture
def inputs(tmp_path):
    return [
        write_jsonl(tmp_path / "a.jsonl", "a", 10, ["Disease"]),
        write_jsonl(tmp_path / "b.jsonl", "b", 3, ["Chemical", "Disease"]),
    ]


def test_mix_samples_each_input_up_to_the_limit_and_keeps_prompts(inputs):
    mixed, sources = mix_instruction_files(inputs, limit=4, seed=1)
    assert [(s.available, s.taken) for s in sources] == [(10, 4), (3, 3)]
    assert [s.labels for s in sources] == [("Disease",), ("Chemical", "Disease")]
    assert sum(e.id.startswith("a/") for e in mixed) == 4 and sum(e.id.startswith("b/") for e in mixed) == 3
    originals = {e.id: e for path in inputs for e in read_instruction_jsonl(path)}
    assert all(e == originals[e.id] for e in mixed)
    assert sources[0].positives == sum(e.positive for e in mixed if e.id.startswith("a/"))


def test_mix_is_seeded_and_shuffles(inputs):
    first, _ = mix_instruction_files(inputs, limit=0, seed=3)
    again, _ = mix_instruction_files(inputs, limit=0, seed=3)
    other, _ = mix_instruction_files(inputs, limit=0, seed=4)
    assert [e.id for e in first] == [e.id for e in again]
    assert [e.id for e in first] != [e.id for e in other]
    assert sorted(e.id for e in first) == sorted(e.id for e in other) and len(first) == 13


def test_mix_names_both_files_for_a_repeated_id(inputs, tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_text(inputs[1].read_text())
    with pytest.raises(ValueError, match=r"E410.*copy\.jsonl.*example 1.*'b/0'.*b\.jsonl"):
        mix_instruction_files([inputs[1], copy])
    with pytest.raises(ValueError, match="E405"):
        mix_instruction_files(inputs, limit=-1)


def test_mix_takes_one_limit_per_input(inputs):
    mixed, sources = mix_instruction_files(inputs, limit=[0, 2], seed=1)
    assert [(s.available, s.taken) for s in sources] == [(10, 10), (3, 2)]
    assert len(mixed) == 12
    with pytest.raises(ValueError, match=r"E405.*once for each of the 2 inputs.*\[1, 2, 3\]"):
        mix_instruction_files(inputs, limit=[1, 2, 3])
    with pytest.raises(ValueError, match=r"E405.*-1"):
        mix_instruction_files(inputs, limit=[0, -1])
