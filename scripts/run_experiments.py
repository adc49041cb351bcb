"""Full data vs hybrid superfiltering vs the random control, per dataset, with throughput figures.

Runs on the engine alone (torch, transformers, peft; no spaCy), so it needs only the instruction
JSONL that `convert-dataset` writes. For each dataset it scores IFD with the weak model, selects
each strategy's subset, trains an adapter per subset, generates answers for the evaluation split
and scores them strictly on character offsets (engine/metrics.py, which agrees with spaCy's
scorer on token-aligned spans). Each adapter's answers and aligned entities go to
`<output>/<dataset>/predictions.<strategy>.<eval dataset>-<split>.jsonl`; each claim in CLAIMS is
tested on them, on all labels and on each label alone, with a paired bootstrap over sentences.
It writes `results.json`, `comparisons.json`, `results.md` and the bar chart `results.png` to
--output.

    python scripts/run_experiments.py --corpus corpus --output experiments \\
        --datasets ncbi-disease --strategies full,hybrid,random --config configs/train_full.cfg

Tune on `--split dev`; report `--split test` once per final configuration. One adapter trained on a
mix of corpora is evaluated on each of them with `--datasets union --eval-datasets a,b,c`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spacy_bioselecttune.engine.align import align_mentions  # noqa: E402
from spacy_bioselecttune.engine.generate import Generator  # noqa: E402
from spacy_bioselecttune.engine.ifd import (  # noqa: E402
    InstructionExample,
    read_instruction_jsonl,
    read_scores,
    score_examples,
    select_subset,
    write_curation_report,
)
from spacy_bioselecttune.engine.metrics import empty_answers, paired_bootstrap, score_records  # noqa: E402
from spacy_bioselecttune.engine.plots import plot_strategy_f1  # noqa: E402
from spacy_bioselecttune.engine.parser import parse_answer  # noqa: E402
from spacy_bioselecttune.engine.records import Entity, Record  # noqa: E402
from spacy_bioselecttune.engine.train import TrainConfig, train_adapter  # noqa: E402


# (A, B): "A scores above B" is a claim the method makes; full data and the random control are what selection must beat.
CLAIMS = (("hybrid", "full"), ("hybrid", "random"), ("ifd", "full"), ("ifd", "random"), ("random", "full"))


def gold_record(example: InstructionExample) -> Record:
    """The gold Record of an instruction example, from its `entities` column."""
    entities = json.loads(example.line).get("entities", [])
    return Record(example.id, example.text, tuple(sorted(Entity(start, end, label) for start, end, label in entities)))


def predict_records(generator: Generator, examples: Sequence[InstructionExample]) -> Tuple[List[Record], List[str]]:
    """Generate an answer per example and place the names it gives in the example's text.

    Returns the predicted Records and the raw answers, in the examples' order.
    """
    raws = generator.generate([example.prompt for example in examples])
    records = []
    for example, raw in zip(examples, raws):
        mentions = parse_answer(raw, example.labels).mentions
        records.append(Record(example.id, example.text, tuple(sorted(align_mentions(example.text, mentions).entities))))
    return records, raws


def write_predictions(path: Path, records: Sequence[Record], raws: Sequence[str]) -> None:
    """One JSON line per example: its id, the model's raw answer and the aligned entities."""
    lines = (
        json.dumps({"id": record.id, "answer": raw, "entities": [[e.start, e.end, e.label] for e in record.entities]})
        for record, raw in zip(records, raws)
    )
    path.write_text("".join(line + "\n" for line in lines), encoding="utf8")


def read_train_config(path: Path, overrides: Sequence[str]) -> TrainConfig:
    """The `[train]` section of a .cfg file, with `key=value` overrides (values as JSON when they parse)."""
    from configparser import ConfigParser

    parser = ConfigParser()
    parser.read(path, encoding="utf8")
    values: Dict[str, object] = {}
    for key, text in list(parser["train"].items()) + [item.split("=", 1) for item in overrides]:
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text.strip()
    return TrainConfig.from_dict(values, source=str(path))


def load_evaluations(args: argparse.Namespace, dataset: str) -> Dict[Tuple[str, str], List[InstructionExample]]:
    """The examples of every (evaluation dataset, split) that the adapters trained on `dataset` are scored on."""
    return {
        (name, split): read_instruction_jsonl(args.corpus / f"{name}-{split}.jsonl")[: args.eval_limit or None]
        for name in (args.eval_datasets or [dataset])
        for split in args.splits
    }


def predictions_path(out: Path, strategy: str, eval_dataset: str, split: str) -> Path:
    """Where one adapter's answers on one evaluation split are kept."""
    return out / f"predictions.{strategy}.{eval_dataset}-{split}.jsonl"


def read_predictions(path: Path, examples: Sequence[InstructionExample]) -> List[Record]:
    """The Records of a predictions file, checked line by line against the examples it answers."""
    lines = path.read_text(encoding="utf8").splitlines()
    if len(lines) != len(examples):
        raise SystemExit(f"{path}: {len(lines)} predictions for {len(examples)} evaluation examples; rerun the strategy.")
    records = []
    for number, (line, example) in enumerate(zip(lines, examples), start=1):
        item = json.loads(line)
        if item["id"] != example.id:
            raise SystemExit(f"{path} line {number}: id {item['id']!r}, expected {example.id!r}; rerun the strategy.")
        records.append(Record(example.id, example.text, tuple(sorted(Entity(s, e, label) for s, e, label in item["entities"]))))
    return records


def compare_strategies(args: argparse.Namespace, dataset: str, rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Paired bootstrap of F1 for each claim in CLAIMS whose two strategies both have predictions.

    Each claim is tested on all labels together ("all"), and on each label alone when the
    evaluation has gold entities of more than one. Each row of this dataset gets its
    empty-answer counts (`empty_answers`) from the same predictions.
    """
    out = args.output / dataset
    comparisons = []
    for (name, split), evaluation in load_evaluations(args, dataset).items():
        gold = [gold_record(example) for example in evaluation]
        labels = sorted({entity.label for record in gold for entity in record.entities})
        paths = {strategy: predictions_path(out, strategy, name, split) for claim in CLAIMS for strategy in claim}
        predicted = {strategy: read_predictions(path, evaluation) for strategy, path in paths.items() if path.exists()}
        for row in rows:
            if (row["dataset"], row["eval_dataset"], row["split"]) == (dataset, name, split) and row["strategy"] in predicted:
                row.update(empty_answers(gold, predicted[row["strategy"]]).to_dict())
        for a, b in CLAIMS:
            if a not in predicted or b not in predicted:
                continue
            for label in [None] + (labels if len(labels) > 1 else []):
                result = paired_bootstrap(gold, predicted[a], predicted[b], samples=args.bootstrap_samples, label=label)
                comparisons.append(
                    {"dataset": dataset, "eval_dataset": name, "split": split, "label": label or "all", "a": a, "b": b, **result.to_dict()}
                )
    return comparisons


def run_dataset(args: argparse.Namespace, dataset: str, cfg: TrainConfig, on_row: Callable[[Dict[str, object]], None]) -> None:
    """Score (when a strategy needs IFD), curate, train and evaluate every strategy on one dataset.

    Each adapter is evaluated on every `--eval-datasets` corpus (default: the dataset itself) and
    every split in `--split`, one result row each, handed to `on_row` as soon as it exists.
    """
    out = args.output / dataset
    out.mkdir(parents=True, exist_ok=True)
    train = read_instruction_jsonl(args.corpus / f"{dataset}-train.jsonl")[: args.train_limit or None]
    dev_path = args.corpus / f"{dataset}-dev.jsonl" if args.dev_loss else None
    evaluations = load_evaluations(args, dataset)
    golds = {key: [gold_record(example) for example in evaluation] for key, evaluation in evaluations.items()}

    ifds: Dict[str, float] = {}
    scoring_speed = None
    if any(strategy != "full" for strategy in args.strategies):
        scores_path = out / "train.scores.jsonl"
        if args.scores and not scores_path.exists():
            shutil.copyfile(args.scores, scores_path)
        scoring = score_examples(train, scores_path, args.weak_model, args.score_batch_size, args.device, show_progress=True)
        scoring_speed = scoring.examples_per_second
        ifds = {key: score.ifd for key, score in read_scores(scores_path).items()}

    for strategy in args.strategies:
        selection = select_subset(strategy, train, ifds, args.ratio, args.negatives_ratio, cfg.seed)
        kept = set(selection.kept_ids)
        if ifds:
            settings = {"strategy": strategy, "ratio": args.ratio, "negatives_ratio": args.negatives_ratio, "seed": cfg.seed}
            write_curation_report(out / f"curation-{strategy}", train, ifds, selection, settings)
        subset_path = out / f"train.{strategy}.jsonl"
        subset_path.write_text("".join(e.line + "\n" for e in train if e.id in kept), encoding="utf8")
        adapter_dir = out / f"adapter-{strategy}"
        summary = train_adapter(cfg, subset_path, adapter_dir, dev_path, device=args.device, show_progress=True)

        generator = Generator(
            cfg.base_model, str(adapter_dir), args.device, args.generate_batch_size, args.max_new_tokens, show_progress=True,
            empty_answer_threshold=args.empty_answer_threshold,
        )
        generator.model  # load before timing
        for (name, split), evaluation in evaluations.items():
            start = time.perf_counter()
            predicted, raws = predict_records(generator, evaluation)
            seconds = time.perf_counter() - start
            write_predictions(predictions_path(out, strategy, name, split), predicted, raws)
            scores = score_records(golds[name, split], predicted)
            on_row(
                {
                    "dataset": dataset,
                    "strategy": strategy,
                    "eval_dataset": name,
                    "split": split,
                    "train_examples": len(kept),
                    "negatives_ratio": args.negatives_ratio,
                    "empty_answer_threshold": args.empty_answer_threshold,
                    "p": scores.overall.precision,
                    "r": scores.overall.recall,
                    "f1": scores.overall.f1,
                    "per_label": scores.to_dict()["ents_per_type"],
                    "train_tokens": summary.tokens,
                    "train_tokens_per_second": summary.tokens_per_second,
                    "train_seconds": summary.seconds,
                    "final_loss": summary.final_loss,
                    "dev_loss": summary.dev_loss,
                    "eval_sentences": len(evaluation),
                    "eval_sentences_per_second": len(evaluation) / seconds if seconds > 0 else 0.0,
                    "scoring_examples_per_second": scoring_speed,
                }
            )
        del generator


EMPTY_ANSWER_COLUMNS = "no entity on positive sentences | no entity on negative sentences | R where it found any"


def empty_answer_cells(row: Dict[str, object]) -> str:
    """The EMPTY_ANSWER_COLUMNS cells of a row that has `empty_answers` counts ("–" where it has none)."""
    if "silent_on_negative" not in row:
        return "– | – | –"
    return (
        f"{row['silent_on_positive']} of {row['positive_sentences']} | {row['silent_on_negative']} of {row['negative_sentences']} | "
        f"{row['recall_where_answered']:.4f}"
    )


def markdown(rows: Sequence[Dict[str, object]], comparisons: Sequence[Dict[str, object]] = ()) -> str:
    """The results table, then the paired comparisons when there are any."""
    lines = [
        f"| dataset | strategy | evaluated on | split | train examples | P | R | F1 | {EMPTY_ANSWER_COLUMNS} | train tokens/s | eval sentences/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['strategy']} | {row['eval_dataset']} | {row['split']} | {row['train_examples']} | {row['p']:.4f} | "
            f"{row['r']:.4f} | {row['f1']:.4f} | {empty_answer_cells(row)} | {row['train_tokens_per_second']:.0f} | {row['eval_sentences_per_second']:.1f} |"
        )
    if any(len(row["per_label"]) > 1 for row in rows):
        lines += ["", "| dataset | strategy | evaluated on | split | label | P | R | F1 |", "|---|---|---|---|---|---:|---:|---:|"]
        for row in rows:
            for label, prf in sorted(row["per_label"].items()):
                lines.append(
                    f"| {row['dataset']} | {row['strategy']} | {row['eval_dataset']} | {row['split']} | {label} | "
                    f"{prf['p']:.4f} | {prf['r']:.4f} | {prf['f']:.4f} |"
                )
    if comparisons:
        lines += [
            "",
            "| dataset | evaluated on | split | label | A | B | F1 A - F1 B | 95% interval | resamples with A not above B |",
            "|---|---|---|---|---|---|---:|---|---:|",
        ]
        for c in comparisons:
            lines.append(
                f"| {c['dataset']} | {c['eval_dataset']} | {c['split']} | {c['label']} | {c['a']} | {c['b']} | {c['delta']:+.4f} | "
                f"[{c['low']:+.4f}, {c['high']:+.4f}] | {c['share_not_better']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_results(output: Path, rows: Sequence[Dict[str, object]], comparisons: Sequence[Dict[str, object]]) -> None:
    """Rewrite results.json, comparisons.json, results.md and the F1 bar chart results.png."""
    (output / "results.json").write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf8")
    (output / "comparisons.json").write_text(json.dumps(list(comparisons), indent=2) + "\n", encoding="utf8")
    (output / "results.md").write_text(markdown(rows, comparisons), encoding="utf8")
    if rows:
        plot_strategy_f1(rows, output / "results.png")


def main(argv: Sequence[str] = ()) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("corpus"), help="Folder with <dataset>-<split>.jsonl")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--datasets", default="ncbi-disease", help="Comma-separated dataset names")
    parser.add_argument("--strategies", default="full,hybrid,random", help="Comma-separated: full, hybrid, random, ifd")
    parser.add_argument("--config", type=Path, default=Path("configs/train_full.cfg"), help="Training settings (.cfg, [train])")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="A training override, key=value")
    parser.add_argument("--split", default="dev", help="Evaluation split(s), comma-separated: dev, test")
    parser.add_argument("--eval-datasets", default="", help="Evaluate on these datasets' splits (default: the training dataset)")
    parser.add_argument("--dev-loss", action="store_true", help="Report the loss on <dataset>-dev.jsonl after each epoch")
    parser.add_argument("--weak-model", default="smollm2-135m")
    parser.add_argument("--scores", type=Path, default=None,
                        help="Start from these IFD scores (an earlier run's train.scores.jsonl, same weak model); examples it lacks are scored")
    parser.add_argument("--ratio", type=float, default=0.5, help="Share of the positives that hybrid and random keep")
    parser.add_argument("--negatives-ratio", type=float, default=1.0, help="Share of the negatives that hybrid and random keep")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--score-batch-size", type=int, default=64)
    parser.add_argument("--generate-batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--empty-answer-threshold", type=float, default=None,
                        help="Keep an answer [] only where the adapter gives it at least this probability (default: plain greedy answers)")
    parser.add_argument("--train-limit", type=int, default=0, help="Use only the first N training examples (0: all)")
    parser.add_argument("--eval-limit", type=int, default=0, help="Evaluate only the first N sentences (0: all)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000, help="Resamples per paired comparison")
    parser.add_argument("--compare-only", action="store_true",
                        help="Recompute the paired comparisons from an earlier run's predictions in --output; train nothing")
    args = parser.parse_args(list(argv) or None)
    args.datasets = [name for name in args.datasets.split(",") if name]
    args.strategies = [name for name in args.strategies.split(",") if name]
    args.eval_datasets = [name for name in args.eval_datasets.split(",") if name]
    args.splits = [name for name in args.split.split(",") if name]
    unknown = [name for name in args.splits if name not in ("dev", "test")]
    if unknown:
        parser.error(f"--split: unknown split {unknown[0]!r} (use dev, test)")
    if args.scores and not args.scores.exists():
        parser.error(f"--scores: {args.scores} does not exist")
    if args.scores and len(args.datasets) > 1:
        parser.error("--scores holds one dataset's IFD scores; name one dataset in --datasets")
    args.output.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, object]] = []
    comparisons: List[Dict[str, object]] = []

    def record_row(row: Dict[str, object]) -> None:
        """Keep the row and rewrite the results files, so an interrupted grid keeps what it finished."""
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_results(args.output, rows, comparisons)

    if args.compare_only:
        rows = json.loads((args.output / "results.json").read_text(encoding="utf8"))
    else:
        cfg = read_train_config(args.config, args.overrides)
    for dataset in args.datasets:
        if not args.compare_only:
            run_dataset(args, dataset, cfg, record_row)
        comparisons += compare_strategies(args, dataset, rows)
    write_results(args.output, rows, comparisons)
    print(markdown(rows, comparisons))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
