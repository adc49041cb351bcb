"""Full data vs hybrid superfiltering vs the random control, per dataset, with throughput figures.

Runs on the engine alone (torch, transformers, peft; no spaCy), so it needs only the instruction
JSONL that `convert-dataset` writes. For each dataset it scores IFD with the weak model, selects
each strategy's subset, trains an adapter per subset, generates answers for the evaluation split
and scores them strictly on character offsets (engine/metrics.py, which agrees with spaCy's
scorer on token-aligned spans). It writes `results.json` and `results.md` to --output.

    python scripts/run_experiments.py --corpus corpus --output experiments \\
        --datasets ncbi-disease --strategies full,hybrid,random --config configs/train_full.cfg

Tune on `--split dev`; report `--split test` once per final configuration. One adapter trained on a
mix of corpora is evaluated on each of them with `--datasets union --eval-datasets a,b,c`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spacy_bioselecttune.engine.align import align_mentions  # noqa: E402
from spacy_bioselecttune.engine.generate import Generator  # noqa: E402
from spacy_bioselecttune.engine.ifd import (  # noqa: E402
    InstructionExample,
    read_instruction_jsonl,
    read_scores,
    score_examples,
    select_subset,
)
from spacy_bioselecttune.engine.metrics import score_records  # noqa: E402
from spacy_bioselecttune.engine.parser import parse_answer  # noqa: E402
from spacy_bioselecttune.engine.records import Entity, Record  # noqa: E402
from spacy_bioselecttune.engine.train import TrainConfig, train_adapter  # noqa: E402


def gold_record(example: InstructionExample) -> Record:
    """The gold Record of an instruction example, from its `entities` column."""
    entities = json.loads(example.line).get("entities", [])
    return Record(example.id, example.text, tuple(sorted(Entity(start, end, label) for start, end, label in entities)))


def predict_records(generator: Generator, examples: Sequence[InstructionExample]) -> List[Record]:
    """Generate an answer per example and place the names it gives in the example's text."""
    raws = generator.generate([example.prompt for example in examples])
    records = []
    for example, raw in zip(examples, raws):
        mentions = parse_answer(raw, example.labels).mentions
        records.append(Record(example.id, example.text, tuple(sorted(align_mentions(example.text, mentions).entities))))
    return records


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


def run_dataset(args: argparse.Namespace, dataset: str, cfg: TrainConfig, on_row: Callable[[Dict[str, object]], None]) -> None:
    """Score (when a strategy needs IFD), curate, train and evaluate every strategy on one dataset.

    Each adapter is evaluated on every `--eval-datasets` corpus (default: the dataset itself) and
    every split in `--split`, one result row each, handed to `on_row` as soon as it exists.
    """
    out = args.output / dataset
    out.mkdir(parents=True, exist_ok=True)
    train = read_instruction_jsonl(args.corpus / f"{dataset}-train.jsonl")[: args.train_limit or None]
    dev_path = args.corpus / f"{dataset}-dev.jsonl" if args.dev_loss else None
    evaluations = {
        (name, split): read_instruction_jsonl(args.corpus / f"{name}-{split}.jsonl")[: args.eval_limit or None]
        for name in (args.eval_datasets or [dataset])
        for split in args.splits
    }
    golds = {key: [gold_record(example) for example in evaluation] for key, evaluation in evaluations.items()}

    ifds: Dict[str, float] = {}
    scoring_speed = None
    if any(strategy != "full" for strategy in args.strategies):
        scores_path = out / "train.scores.jsonl"
        scoring = score_examples(train, scores_path, args.weak_model, args.score_batch_size, args.device, show_progress=True)
        scoring_speed = scoring.examples_per_second
        ifds = {key: score.ifd for key, score in read_scores(scores_path).items()}

    for strategy in args.strategies:
        kept = set(select_subset(strategy, train, ifds, ratio=args.ratio, seed=cfg.seed).kept_ids)
        subset_path = out / f"train.{strategy}.jsonl"
        subset_path.write_text("".join(e.line + "\n" for e in train if e.id in kept), encoding="utf8")
        adapter_dir = out / f"adapter-{strategy}"
        summary = train_adapter(cfg, subset_path, adapter_dir, dev_path, device=args.device, show_progress=True)

        generator = Generator(cfg.base_model, str(adapter_dir), args.device, args.generate_batch_size, args.max_new_tokens)
        generator.model  # load before timing
        for (name, split), evaluation in evaluations.items():
            start = time.perf_counter()
            predicted = predict_records(generator, evaluation)
            seconds = time.perf_counter() - start
            scores = score_records(golds[name, split], predicted)
            on_row(
                {
                    "dataset": dataset,
                    "strategy": strategy,
                    "eval_dataset": name,
                    "split": split,
                    "train_examples": len(kept),
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


def markdown(rows: Sequence[Dict[str, object]]) -> str:
    lines = [
        "| dataset | strategy | evaluated on | split | train examples | P | R | F1 | train tokens/s | eval sentences/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['strategy']} | {row['eval_dataset']} | {row['split']} | {row['train_examples']} | {row['p']:.4f} | "
            f"{row['r']:.4f} | {row['f1']:.4f} | {row['train_tokens_per_second']:.0f} | {row['eval_sentences_per_second']:.1f} |"
        )
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--score-batch-size", type=int, default=64)
    parser.add_argument("--generate-batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--train-limit", type=int, default=0, help="Use only the first N training examples (0: all)")
    parser.add_argument("--eval-limit", type=int, default=0, help="Evaluate only the first N sentences (0: all)")
    args = parser.parse_args(list(argv) or None)
    args.datasets = [name for name in args.datasets.split(",") if name]
    args.strategies = [name for name in args.strategies.split(",") if name]
    args.eval_datasets = [name for name in args.eval_datasets.split(",") if name]
    args.splits = [name for name in args.split.split(",") if name]
    unknown = [name for name in args.splits if name not in ("dev", "test")]
    if unknown:
        parser.error(f"--split: unknown split {unknown[0]!r} (use dev, test)")
    cfg = read_train_config(args.config, args.overrides)
    args.output.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, object]] = []

    def record_row(row: Dict[str, object]) -> None:
        """Keep the row and rewrite the results files, so an interrupted grid keeps what it finished."""
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.output / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf8")
        (args.output / "results.md").write_text(markdown(rows), encoding="utf8")

    for dataset in args.datasets:
        run_dataset(args, dataset, cfg, record_row)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
