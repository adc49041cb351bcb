from __future__ import annotations

import importlib.util
from pathlib import Path

from spacy_bioselecttune.engine.answer_format import LOOP_ITEMS

SCRIPT = Path(__file__).parents[2] / "scripts" / "loop_stop_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("loop_stop_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _items(*names: str) -> str:
    return "".join(f'{{"entity": "Disease", "name": "{name}"}}, ' for name in names)


def test_replay_counts_stopped_loops_and_the_names_a_stop_would_lose():
    script = _load()
    looping = "[" + _items("a", "b", "a", "b", "a", "b", "a", "b", "a", "b")  # ran to max_new_tokens
    loses_c = "[" + _items("a", "b", "a", "b", "a", "c", "c", "c", "c", "c")  # three repeats, then a new name
    closed = "[" + _items("a", "a") + "]"
    answers = [looping, loses_c, closed]
    three, four = (script.replay(answers, ["Disease"], n) for n in (3, 4))
    assert (three["stopped"], three["mentions_changed"]) == (2, 1)
    assert (four["stopped"], four["mentions_changed"]) == (2, 0)
    assert three["characters_saved"] > four["characters_saved"] > 0
    assert LOOP_ITEMS == 4  # the engine's own rule is the one the dev check chose
