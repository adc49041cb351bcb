"""Where the time of decoding goes: each decoding loop's phase times at several batch sizes, and torch.profiler tables.

For every loop and batch size the prompts are decoded once after a warm-up batch (which loads the
weights, caches the shared prefix and, for the static loop on CUDA, captures the graph). One more
batch is then decoded under torch.profiler: its tables show which operators take the host's and
the GPU's time, and `device_ms_per_step` against `ms_per_decode_step` says whether a decode step
waits on the GPU or on the host. Engine only: no spaCy.

    python scripts/profile_decoding.py --prompts corpus/bc2gm-test.jsonl --output profile-decoding \\
        --adapter spacy_bioselecttune/adapters/smollm2-135m-union --batch-sizes 64,512

--repeats N times every loop N times, the loops taking turns, so that a machine whose speed
drifts (a shared host) affects each loop alike.

--random-weights DIR builds the base model from the config and tokenizer in DIR with random
weights: a step's cost depends only on the shapes, but such a model never closes its JSON array,
so every batch runs `--max-new-tokens` steps.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_training import random_base  # noqa: E402

from spacy_bioselecttune.engine.generate import DECODINGS, DecodeTimes, Generator  # noqa: E402
from spacy_bioselecttune.engine.ifd import read_instruction_jsonl  # noqa: E402
from spacy_bioselecttune.engine.loading import DEFAULT_BASE_MODEL  # noqa: E402


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_decoding(generator: Generator, prompts: Sequence[str]) -> Dict[str, object]:
    """Decode `prompts` (after a warm-up batch) and return the run's speed and phase times."""
    generator.generate_token_ids(prompts[: generator.batch_size])
    generator.times = DecodeTimes()
    _synchronize()
    started = time.perf_counter()
    token_ids = generator.generate_token_ids(prompts)
    _synchronize()
    seconds = time.perf_counter() - started
    return {
        "prompts": len(prompts),
        "seconds": seconds,
        "sentences_per_second": len(prompts) / seconds,
        "generated_tokens": sum(map(len, token_ids)),
        **generator.times.to_dict(),
    }


def profile_batch(generator: Generator, prompts: Sequence[str], output: Path, name: str, rows: int) -> Dict[str, float]:
    """Decode one batch under torch.profiler; write its tables and return the GPU's busy time per decode step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = generator.model.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    generator.times = DecodeTimes()
    _synchronize()
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        generator.generate_token_ids(prompts[: generator.batch_size])
        _synchronize()
    wall = time.perf_counter() - started
    averages = profiler.key_averages()
    (output / f"{name}_by_cpu_time.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=rows) + "\n")
    device_seconds = 0.0
    if cuda:
        (output / f"{name}_by_gpu_time.txt").write_text(averages.table(sort_by="self_device_time_total", row_limit=rows) + "\n")
        device_seconds = sum(event.self_device_time_total for event in averages) / 1e6
    steps = max(1, generator.times.decode_steps + generator.times.batches)
    return {
        "profiled_wall_seconds": wall,
        "profiled_steps": steps,
        "device_busy_seconds": device_seconds,
        "device_ms_per_step": 1000 * device_seconds / steps,
        "wall_ms_per_step": 1000 * wall / steps,
    }


def main(argv: Sequence[str] = ()) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=Path, required=True, help="Instruction JSONL whose prompts are decoded")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--random-weights", type=Path, help="Directory with config.json and tokenizer files")
    parser.add_argument("--decodings", default=",".join(DECODINGS))
    parser.add_argument("--batch-sizes", default="64,512")
    parser.add_argument("--batches", type=int, default=4, help="Batches of prompts timed per loop and batch size")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="Time each loop this many times, the loops taking turns")
    parser.add_argument("--rows", type=int, default=25, help="Rows of each profiler table")
    parser.add_argument("--no-profile", action="store_true", help="Time only, without the torch.profiler batch")
    args = parser.parse_args(list(argv) or None)
    decodings = [name for name in args.decodings.split(",") if name]
    unknown = sorted(set(decodings) - set(DECODINGS))
    if unknown:
        parser.error(f"unknown decodings {unknown}; use some of {list(DECODINGS)}")
    batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size]
    args.output.mkdir(parents=True, exist_ok=True)
    base_model = args.base_model
    if args.random_weights is not None:
        base_model = str(random_base(args.random_weights, args.output / "random-base", seed=0))
    examples = read_instruction_jsonl(args.prompts)
    if not examples:
        parser.error(f"{args.prompts} holds no prompts")

    results: List[Dict[str, object]] = []
    for batch_size in batch_sizes:
        prompts = [examples[i % len(examples)].prompt for i in range(batch_size * args.batches)]
        for repeat, decoding in [(r, d) for r in range(args.repeats) for d in decodings]:
            generator: Optional[Generator] = Generator(
                base_model, args.adapter, device=args.device, batch_size=batch_size,
                max_new_tokens=args.max_new_tokens, decoding=decoding,
            )
            row = {"decoding": decoding, "batch_size": batch_size, "repeat": repeat, **time_decoding(generator, prompts)}
            if not args.no_profile and repeat == 0:
                row.update(profile_batch(generator, prompts, args.output, f"{decoding}_b{batch_size}", args.rows))
            results.append(row)
            print(json.dumps(row), flush=True)
            generator = None
            gc.collect()
            _empty_cuda_cache()
    (args.output / "decoding.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf8")
    return results


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
