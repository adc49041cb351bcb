"""PNG figures for reports: each function takes data and an output path, and returns the path."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

PathLike = Union[str, Path]


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_path: PathLike) -> Path:
    """Lay out `fig`, write it as a 150 dpi PNG at `out_path`, close it and return the path."""
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=150)
    _pyplot().close(fig)
    return out


def plot_ifd_histogram(
    series: Mapping[str, Sequence[float]],
    out_path: PathLike,
    threshold: Optional[float] = 1.0,
    title: str = "IFD of kept and dropped examples",
    bins: int = 40,
) -> Path:
    """Overlaid histograms of IFD values, one per named series, on shared bins.

    series: name (e.g. "kept positives") -> finite IFD values; empty series are skipped.
    threshold: mark this value when the data reach it (IFD >= 1 is excluded by the selection).
    """
    plt = _pyplot()
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(7, 4))
    if values:
        low, high = min(values), max(values)
        if high == low:
            high = low + 1.0
        edges = [low + (high - low) * i / bins for i in range(bins + 1)]
        for name, vs in series.items():
            finite = [v for v in vs if math.isfinite(v)]
            if finite:
                ax.hist(finite, bins=edges, histtype="stepfilled", alpha=0.45, label=f"{name} ({len(finite)})")
        if threshold is not None and high >= threshold:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"IFD = {threshold}")
        ax.legend()
    ax.set_xlabel("IFD")
    ax.set_ylabel("examples")
    ax.set_title(title)
    return _save(fig, out_path)


def plot_loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    out_path: PathLike,
    dev_steps: Sequence[int] = (),
    dev_losses: Sequence[float] = (),
    title: str = "Training loss (answer tokens)",
) -> Path:
    """Training loss per optimizer step, with dev loss points when given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(steps), list(losses), label="train", linewidth=1)
    if dev_steps:
        ax.plot(list(dev_steps), list(dev_losses), marker="o", label="dev")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per answer token")
    ax.set_title(title)
    ax.legend()
    return _save(fig, out_path)


def plot_per_label_f1(metrics: Mapping[str, object], out_path: PathLike, title: str = "Strict F1 per entity type") -> Path:
    """Horizontal bars of F1 per label plus the overall score, from `ents_f` and `ents_per_type`."""
    plt = _pyplot()
    per_type = metrics.get("ents_per_type") or {}
    labels = sorted(per_type) + ["overall"]
    scores = [float(per_type[label]["f"]) for label in sorted(per_type)] + [float(metrics.get("ents_f") or 0.0)]
    fig, ax = plt.subplots(figsize=(6, 1 + 0.5 * len(labels)))
    bars = ax.barh(labels, scores, color=["tab:blue"] * (len(labels) - 1) + ["tab:gray"])
    for bar, score in zip(bars, scores):
        ax.text(min(score + 0.01, 0.9), bar.get_y() + bar.get_height() / 2, f"{score:.3f}", va="center")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("F1")
    ax.set_title(title)
    return _save(fig, out_path)


def strategy_f1_bars(rows: Sequence[Mapping[str, object]]) -> Dict[Tuple[str, str, str, str, str], float]:
    """F1 keyed by (dataset, evaluation set, split, label, strategy); label "" is all labels
    together, and each label gets its own key only when a row has several."""
    f1 = {}
    for row in rows:
        group = (row["dataset"], row["eval_dataset"], row["split"])
        f1[(*group, "", row["strategy"])] = float(row["f1"])
        per_label = row.get("per_label") or {}
        if len(per_label) > 1:
            f1.update({(*group, label, row["strategy"]): float(prf["f"]) for label, prf in sorted(per_label.items())})
    return f1


def plot_strategy_f1(rows: Sequence[Mapping[str, object]], out_path: PathLike, title: str = "Strict F1 by training subset") -> Path:
    """Grouped bars of F1: one group per (training data, evaluation set, split), and one more per
    label when the evaluation has several; one bar per strategy.

    rows: mappings with `dataset`, `eval_dataset`, `split`, `strategy`, `f1` and `per_label`
    (label -> {"f": ...}), as `scripts/run_experiments.py` writes them.
    """
    plt = _pyplot()
    f1 = strategy_f1_bars(rows)
    groups = list(dict.fromkeys(key[:4] for key in f1))
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 + 1.6 * len(groups)), 4))
    for index, strategy in enumerate(strategies):
        xs = [g + (index - (len(strategies) - 1) / 2) * width for g in range(len(groups))]
        scores = [f1.get((*group, strategy), 0.0) for group in groups]
        bars = ax.bar(xs, scores, width, label=strategy)
        for bar, score in zip(bars, scores):
            ax.text(bar.get_x() + bar.get_width() / 2, score + 0.01, f"{score:.3f}", ha="center", fontsize=8)
    names = [eval_set if eval_set == dataset else f"{dataset} on {eval_set}" for dataset, eval_set, _, _ in groups]
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{name}\n{split} {label or 'all labels'}" for name, (_, _, split, label) in zip(names, groups)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("strict entity F1")
    ax.set_title(title)
    ax.legend()
    return _save(fig, out_path)


def plot_seed_f1(rows: Sequence[Mapping[str, object]], out_path: PathLike, title: str = "Strict F1 per training seed") -> Path:
    """One dot per seed and a bar at the mean: a column per strategy within each group of
    (training data, evaluation set, split, label).

    rows: mappings with `dataset`, `eval_dataset`, `split`, `label`, `strategy`, `f1s` and `mean`,
    as `scripts/pool_seeds.py` writes them.
    """
    plt = _pyplot()
    groups = list(dict.fromkeys((row["dataset"], row["eval_dataset"], row["split"], row["label"]) for row in rows))
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    width = 0.8 / max(1, len(strategies))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 + 1.8 * len(groups)), 4))
    in_legend = set()
    for row in rows:
        index = strategies.index(row["strategy"])
        x = groups.index((row["dataset"], row["eval_dataset"], row["split"], row["label"])) + (index - (len(strategies) - 1) / 2) * width
        color = colors[index % len(colors)]
        f1s = [float(f1) for f1 in row["f1s"]]
        legend_label = None if row["strategy"] in in_legend else row["strategy"]
        in_legend.add(row["strategy"])
        ax.scatter([x] * len(f1s), f1s, color=color, s=18, zorder=3, label=legend_label)
        ax.hlines(float(row["mean"]), x - width * 0.4, x + width * 0.4, color=color, linewidth=2)
        ax.text(x, max(f1s) + 0.015, f"{float(row['mean']):.3f}", ha="center", fontsize=7)
    names = [eval_set if eval_set == dataset else f"{dataset} on {eval_set}" for dataset, eval_set, _, _ in groups]
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{name}\n{split} {label if label != 'all' else 'all labels'}" for name, (_, _, split, label) in zip(names, groups)])
    all_f1s = [float(f1) for row in rows for f1 in row["f1s"]]
    ax.set_ylim(max(0.0, min(all_f1s) - 0.1), min(1.05, max(all_f1s) + 0.06))
    ax.set_ylabel("strict entity F1 (dots: seeds; bar: mean)")
    ax.set_title(title)
    ax.legend()
    return _save(fig, out_path)
