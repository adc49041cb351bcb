"""Where the time of a LoRA training step and of IFD scoring goes: step times and torch.profiler tables.

Runs the engine's own training loop (`train_adapter`) for a few steps, profiles the steps after a
warm-up, then times IFD scoring at a few batch sizes. Engine only: no spaCy.

    python scripts/profile_training.py --train corpus/ncbi-disease-train.jsonl --output profile \\
        --config configs/train_gpu.cfg

--random-weights DIR builds the base model from the config and tokenizer in DIR with random weights.
Speed depends only on the shapes, so a machine without the real weights measures the same times.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_experiments import read_train_config  # noqa: E402

from spacy_bioselecttune.engine.ifd import read_instruction_jsonl, score_examples  # noqa: E402
from spacy_bioselecttune.engine.train import train_adapter  # noqa: E402


def random_base(source: Path, target: Path, seed: int) -> Path:
    """A checkpoint with the architecture and tokenizer of `source` and seeded random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    model.save_pretrained(target)
    for path in source.iterdir():
        if path.name.startswith("tokenizer") or path.suffix == ".jinja":
            shutil.copy(path, target / path.name)
    return target


def profile_training(args: argparse.Namespace, base_model: str) -> Dict[str, object]:
    """Train `warmup + steps` steps; time every step and profile the last `steps`."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cfg = replace(
        read_train_config(args.config, args.overrides),
        base_model=base_model,
        max_steps=args.warmup + args.steps,
        checkpoint_every=0,
        log_every=1,
    )
    cuda = torch.cuda.is_available() and args.device != "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    profiler = profile(activities=activities)
    stamps: List[float] = []

    def on_step(step: int, loss: float) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if step == args.warmup:
            profiler.start()
        elif step == args.warmup + args.steps:
            profiler.stop()

    summary = train_adapter(cfg, args.train, args.output / "adapter", device=args.device, on_step=on_step)
    step_seconds = [b - a for a, b in zip(stamps[args.warmup - 1 :], stamps[args.warmup :])]
    averages = profiler.key_averages()
    tables = {"by_cpu_time": averages.table(sort_by="self_cpu_time_total", row_limit=args.rows)}
    if cuda:
        tables["by_gpu_time"] = averages.table(sort_by="self_device_time_total", row_limit=args.rows)
    for name, table in tables.items():
        (args.output / f"train_{name}.txt").write_text(table + "\n", encoding="utf8")
    return {
        "batch_size": cfg.batch_size,
        "profiled_steps": len(step_seconds),
        "median_step_seconds": statistics.median(step_seconds) if step_seconds else None,
        "tokens_per_second_whole_run": summary.tokens_per_second,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def time_scoring(args: argparse.Namespace, base_model: str) -> List[Dict[str, object]]:
    """IFD scoring speed over the first `--score-examples` examples at each batch size."""
    examples = read_instruction_jsonl(args.train)[: args.score_examples]
    rows = []
    for batch_size in args.score_batch_sizes:
        path = args.output / f"scores.b{batch_size}.jsonl"
        path.unlink(missing_ok=True)
        run = score_examples(examples, path, base_model, batch_size, args.device)
        rows.append({"batch_size": batch_size, "examples": run.scored, "examples_per_second": run.examples_per_second})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: Sequence[str] = ()) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="Instruction JSONL to train and score on")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=Path("configs/train_gpu.cfg"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="A training override, key=value")
    parser.add_argument("--random-weights", type=Path, help="Directory with config.json and tokenizer files")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=10, help="Steps before profiling (at least 1)")
    parser.add_argument("--steps", type=int, default=20, help="Steps profiled")
    parser.add_argument("--rows", type=int, default=30, help="Rows of each profiler table")
    parser.add_argument("--score-examples", type=int, default=2048)
    parser.add_argument("--score-batch-sizes", default="64,256,512")
    args = parser.parse_args(list(argv) or None)
    args.score_batch_sizes = [int(size) for size in args.score_batch_sizes.split(",") if size]
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    args.output.mkdir(parents=True, exist_ok=True)
    base_model = read_train_config(args.config, args.overrides).base_model
    if args.random_weights is not None:
        base_model = str(random_base(args.random_weights, args.output / "random-base", seed=0))

    results = {"training": profile_training(args, base_model), "scoring": time_scoring(args, base_model)}
    (args.output / "profile.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf8")
    print(json.dumps(results, indent=2))
    for name in ("by_gpu_time", "by_cpu_time"):
        table = args.output / f"train_{name}.txt"
        if table.is_file():
            print(table.read_text(encoding="utf8"))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
