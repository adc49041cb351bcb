from __future__ import annotations

from spacy_bioselecttune.engine.plots import plot_seed_f1, plot_strategy_f1, strategy_f1_bars


def _row(strategy: str, f1: float, per_label: dict) -> dict:
    return {"dataset": "bc5cdr", "eval_dataset": "bc5cdr", "split": "test", "strategy": strategy, "f1": f1, "per_label": per_label}


def test_strategy_bars_add_a_group_per_label_only_when_there_are_several(tmp_path):
    one_label = [_row("full", 0.6, {"Disease": {"f": 0.6}}), _row("hybrid", 0.3, {"Disease": {"f": 0.3}})]
    assert strategy_f1_bars(one_label) == {("bc5cdr", "bc5cdr", "test", "", "full"): 0.6, ("bc5cdr", "bc5cdr", "test", "", "hybrid"): 0.3}
    two_labels = [_row("full", 0.7, {"Disease": {"f": 0.6}, "Chemical": {"f": 0.8}})]
    assert strategy_f1_bars(two_labels) == {
        ("bc5cdr", "bc5cdr", "test", "", "full"): 0.7,
        ("bc5cdr", "bc5cdr", "test", "Chemical", "full"): 0.8,
        ("bc5cdr", "bc5cdr", "test", "Disease", "full"): 0.6,
    }
    assert plot_strategy_f1(two_labels, tmp_path / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_plot_draws_a_png_from_pooled_rows(tmp_path):
    rows = [
        {"dataset": "bc5cdr", "eval_dataset": "bc5cdr", "split": "test", "label": label, "strategy": strategy, "f1s": f1s, "mean": sum(f1s) / len(f1s)}
        for label in ("all", "Disease")
        for strategy, f1s in (("full", [0.65]), ("hybrid", [0.56, 0.52, 0.54]))
    ]
    assert plot_seed_f1(rows, tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
