"""Pool strategy-grid runs that differ only in their training seed: F1 per seed, mean and spread per
strategy, and each claim tested over seeds and sentences together.

One grid run (`scripts/run_experiments.py`) trains each strategy once, so its paired bootstrap
sees only the test-set sampling, not how much another seed would move the adapter. This reads
several runs' `results.json` and saved predictions (the seed of each adapter comes from its
`bioselecttune.json`), refuses runs whose adapters differ in any other training setting (or
that were evaluated with another empty-answer threshold), and
writes `seeds.json`, `seeds.md` (with each seed's empty answers: sentences on which an adapter
found nothing, and its recall where it found something) and the dot plot `seeds.png` to --output:

    python scripts/pool_seeds.py --corpus corpus --output metrics/seeds-bc5cdr \\
        --runs metrics/strategies-bc5cdr-cpu,metrics/strategies-bc5cdr-cpu-seed1

Each claim is tested with `seed_bootstrap` (engine/metrics.py): records and seeds resampled
together, on all labels and on each label alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run_experiments import (  # noqa: E402
    CLAIMS,
    EMPTY_ANSWER_COLUMNS,
    empty_answer_cells,
    gold_record,
    predictions_path,
    read_predictions,
)

from spacy_bioselecttune.engine.ifd import read_instruction_jsonl  # noqa: E402
from spacy_bioselecttune.engine.metrics import PRF, empty_answers, score_records, seed_bootstrap  # noqa: E402
from spacy_bioselecttune.engine.plots import plot_seed_f1  # noqa: E402
from spacy_bioselecttune.engine.records import Record  # noqa: E402

# (dataset, evaluation dataset, split)
Group = Tuple[str, str, str]
# (run directory, results row)
Run = Tuple[Path, Dict[str, object]]


def adapter_settings(run_dir: Path, row: Dict[str, object]) -> Dict[str, object]:
    """The training settings of the adapter behind one results row, as `train` saved them."""
    path = run_dir / str(row["dataset"]) / f"adapter-{row['strategy']}" / "bioselecttune.json"
    if not path.exists():
        raise SystemExit(f"{path}: missing; the seed of {row['strategy']!r} in {run_dir} cannot be told.")
    return json.loads(path.read_text(encoding="utf8"))["train_config"]


def collect_runs(run_dirs: Sequence[Path]) -> Dict[Group, Dict[str, Dict[int, Run]]]:
    """Every results row of every run, keyed by group, strategy and seed.

    Refuses two rows with the same group, strategy and seed, and adapters of one dataset whose
    settings differ in anything but the seed, naming both runs and the setting.
    """
    runs: Dict[Group, Dict[str, Dict[int, Run]]] = {}
    reference: Dict[str, Tuple[Path, Dict[str, object]]] = {}
    for run_dir in run_dirs:
        results = run_dir / "results.json"
        if not results.exists():
            raise SystemExit(f"{results}: missing; is {run_dir} the --output of a strategy grid?")
        for row in json.loads(results.read_text(encoding="utf8")):
            settings = adapter_settings(run_dir, row)
            seed = int(settings.pop("seed"))
            settings["negatives_ratio"] = row.get("negatives_ratio")
            settings["empty_answer_threshold"] = row.get("empty_answer_threshold")
            first_dir, first = reference.setdefault(str(row["dataset"]), (run_dir, settings))
            for key in sorted(set(first) | set(settings)):
                if first.get(key) != settings.get(key):
                    raise SystemExit(
                        f"{run_dir} trained {row['dataset']} {row['strategy']} with {key}={settings.get(key)!r}, "
                        f"{first_dir} with {key}={first.get(key)!r}: pool only runs that differ in the seed."
                    )
            group = (str(row["dataset"]), str(row["eval_dataset"]), str(row["split"]))
            seeds = runs.setdefault(group, {}).setdefault(str(row["strategy"]), {})
            if seed in seeds:
                raise SystemExit(f"{row['strategy']} with seed {seed} on {'/'.join(group)} is in both {seeds[seed][0]} and {run_dir}.")
            seeds[seed] = (run_dir, row)
    return runs


def load_group(corpus: Path, group: Group, strategies: Dict[str, Dict[int, Run]]) -> Tuple[List[Record], Dict[str, Dict[int, List[Record]]]]:
    """The gold records of one group's evaluation split and every run's predictions on them."""
    dataset, eval_dataset, split = group
    sizes = {int(row["eval_sentences"]) for seeds in strategies.values() for _, row in seeds.values()}
    if len(sizes) > 1:
        raise SystemExit(f"Runs on {'/'.join(group)} were evaluated on different numbers of sentences {sorted(sizes)}; rerun with one --eval-limit.")
    examples = read_instruction_jsonl(corpus / f"{eval_dataset}-{split}.jsonl")[: sizes.pop()]
    gold = [gold_record(example) for example in examples]
    predicted = {
        strategy: {
            seed: read_predictions(predictions_path(run_dir / dataset, strategy, eval_dataset, split), examples)
            for seed, (run_dir, _) in sorted(seeds.items())
        }
        for strategy, seeds in strategies.items()
    }
    return gold, predicted


def labels_to_test(gold: Sequence[Record]) -> List[str]:
    """"all", then each gold label alone when there are several."""
    labels = sorted({entity.label for record in gold for entity in record.entities})
    return ["all"] + (labels if len(labels) > 1 else [])


def summarize(gold: Sequence[Record], predicted: Dict[str, Dict[int, List[Record]]], group: Group) -> List[Dict[str, object]]:
    """One row per strategy and label ("all" first): F1 of each seed, their mean and standard deviation."""
    rows = []
    for strategy, seeds in predicted.items():
        scores = {seed: score_records(gold, records) for seed, records in seeds.items()}
        for label in labels_to_test(gold):
            f1s = {seed: (score.overall if label == "all" else score.per_label.get(label, PRF())).f1 for seed, score in scores.items()}
            values = list(f1s.values())
            rows.append(
                {
                    "dataset": group[0], "eval_dataset": group[1], "split": group[2], "strategy": strategy, "label": label,
                    "seeds": list(f1s), "f1s": values, "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else None,
                }
            )
    return rows


def empty_answer_rows(gold: Sequence[Record], predicted: Dict[str, Dict[int, List[Record]]], group: Group) -> List[Dict[str, object]]:
    """One row per strategy and seed: strict P/R/F1 on all labels and where the adapter answered `[]`."""
    rows = []
    for strategy, seeds in predicted.items():
        for seed, records in seeds.items():
            overall = score_records(gold, records).overall
            rows.append(
                {
                    "dataset": group[0], "eval_dataset": group[1], "split": group[2], "strategy": strategy, "seed": seed,
                    "p": overall.precision, "r": overall.recall, "f1": overall.f1, **empty_answers(gold, records).to_dict(),
                }
            )
    return rows


def compare(gold: Sequence[Record], predicted: Dict[str, Dict[int, List[Record]]], group: Group, samples: int) -> List[Dict[str, object]]:
    """`seed_bootstrap` of each claim in CLAIMS whose two strategies were both run, per label."""
    comparisons = []
    for a, b in CLAIMS:
        if a not in predicted or b not in predicted:
            continue
        for label in labels_to_test(gold):
            result = seed_bootstrap(gold, list(predicted[a].values()), list(predicted[b].values()), samples=samples, label=None if label == "all" else label)
            comparisons.append(
                {"dataset": group[0], "eval_dataset": group[1], "split": group[2], "label": label, "a": a, "b": b,
                 "seeds_a": list(predicted[a]), "seeds_b": list(predicted[b]), **result.to_dict()}
            )
    return comparisons


def markdown(rows: Sequence[Dict[str, object]], comparisons: Sequence[Dict[str, object]], empty: Sequence[Dict[str, object]] = ()) -> str:
    """The per-seed table, the claims tested over seeds and sentences, then the empty answers per seed."""
    lines = [
        "| dataset | evaluated on | split | strategy | label | F1 per seed | mean F1 | SD over seeds |",
        "|---|---|---|---|---|---|---:|---:|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{f1:.3f} (seed {seed})" for seed, f1 in zip(row["seeds"], row["f1s"]))
        sd = f"{row['sd']:.3f}" if row["sd"] is not None else "–"
        lines.append(
            f"| {row['dataset']} | {row['eval_dataset']} | {row['split']} | {row['strategy']} | {row['label']} | {per_seed} | {row['mean']:.4f} | {sd} |"
        )
    if comparisons:
        lines += [
            "",
            "| dataset | evaluated on | split | label | A (seeds) | B (seeds) | mean F1 A - mean F1 B | 95% interval | resamples with A not above B |",
            "|---|---|---|---|---|---|---:|---|---:|",
        ]
        for c in comparisons:
            lines.append(
                f"| {c['dataset']} | {c['eval_dataset']} | {c['split']} | {c['label']} | {c['a']} ({len(c['seeds_a'])}) | "
                f"{c['b']} ({len(c['seeds_b'])}) | {c['delta']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] | {c['share_not_better']:.3f} |"
            )
    if empty:
        lines += [
            "",
            f"| dataset | evaluated on | split | strategy | seed | P | R | F1 | {EMPTY_ANSWER_COLUMNS} |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in empty:
            lines.append(
                f"| {row['dataset']} | {row['eval_dataset']} | {row['split']} | {row['strategy']} | {row['seed']} | {row['p']:.4f} | "
                f"{row['r']:.4f} | {row['f1']:.4f} | {empty_answer_cells(row)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> Dict[str, List[Dict[str, object]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="Comma-separated --output folders of strategy-grid runs")
    parser.add_argument("--corpus", type=Path, default=Path("corpus"), help="Folder with <dataset>-<split>.jsonl")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--bootstrap-samples", type=int, default=1000, help="Resamples per comparison")
    args = parser.parse_args(list(argv) or None)
    run_dirs = [Path(name) for name in args.runs.split(",") if name]
    rows: List[Dict[str, object]] = []
    comparisons: List[Dict[str, object]] = []
    empty: List[Dict[str, object]] = []
    for group, strategies in collect_runs(run_dirs).items():
        gold, predicted = load_group(args.corpus, group, strategies)
        rows += summarize(gold, predicted, group)
        comparisons += compare(gold, predicted, group, args.bootstrap_samples)
        empty += empty_answer_rows(gold, predicted, group)
    args.output.mkdir(parents=True, exist_ok=True)
    pooled = {"runs": [str(path) for path in run_dirs], "rows": rows, "comparisons": comparisons, "empty_answers": empty}
    (args.output / "seeds.json").write_text(json.dumps(pooled, indent=2) + "\n", encoding="utf8")
    (args.output / "seeds.md").write_text(markdown(rows, comparisons, empty), encoding="utf8")
    plot_seed_f1(rows, args.output / "seeds.png")
    print(markdown(rows, comparisons, empty))
    return pooled


if __name__ == "__main__":
    main(sys.argv[1:])
