"""`bench`: generation speed of a naive reference loop against the optimised `Generator`.

Every run decodes the same prompts greedily. The reference calls Hugging Face `generate` batch
by batch in input order with the adapter unmerged and no prefix cache; the optimised run sorts
by length, merges the adapter, reuses the shared prompt prefix's cache and decodes with the
generator's default loop (continuous batching on a CPU; on CUDA the static loop refilling
finished rows, replayed as CUDA graphs). Each variant turns one technique off or swaps it
(no prefix cache; no drafts from the prompt, where the optimised run drafts; bf16 weights; int8
Linear layers, CPU only; another decoding loop), so its effect is measured against the same
reference; a variant whose loop is the optimised run's own is skipped.
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import typer

from ..engine.align import align_mentions
from ..engine.answer_format import build_prompt, check_labels
from ..engine.corpora import read_records
from ..engine.encoding import encode_prompt
from ..engine.generate import ArrayCloseTracker, Generator
from ..engine.loading import DEFAULT_BASE_MODEL, int8_linear_layers, load_model, resolve_device
from ..engine.metrics import score_records
from ..engine.parser import parse_answer
from ..engine.records import Entity, Record
from ..errors import Errors
from . import Arg, Opt, app

VARIANTS: Dict[str, Dict[str, object]] = {
    "no-prefix-cache": {"use_prefix_cache": False},
    "no-drafts": {"draft_tokens": 0},
    "unmerged": {"merge_adapter": False},
    "bf16": {"dtype": "bfloat16"},
    "int8": {"prepare": int8_linear_layers},
    "dynamic": {"decoding": "dynamic"},
    "static": {"decoding": "static"},
    "compiled": {"decoding": "compiled"},
    "continuous": {"decoding": "continuous"},
    "static-continuous": {"decoding": "static-continuous"},
    "compiled-continuous": {"decoding": "compiled-continuous"},
}
DEFAULT_VARIANTS = [name for name in VARIANTS if not name.startswith("compiled")]  # compiling takes about a minute on a CPU
# The static loop is for CUDA graphs; on a CPU it runs eagerly, every finished row still computed,
# and was the slowest loop there (1.13 times the plain loop on two AVX2 cores), so it runs on request
# only. bf16 weights on a CPU without bf16 instructions are converted in every product: 0.77 times
# the plain loop on those cores, so there bf16 runs on request only too.
CPU_DEFAULT_VARIANTS = [name for name in DEFAULT_VARIANTS if name != "static"]
RESULTS_JSON = "bench.json"
RESULTS_MARKDOWN = "bench.md"


@dataclass
class BenchRun:
    """Speed, memory and (with gold entities) accuracy of one generation method."""

    method: str
    sentences: int
    seconds: float
    generated_tokens: int
    peak_host_mib: float
    peak_gpu_mib: Optional[float] = None
    f1: Optional[float] = None
    phases: Optional[Dict[str, float]] = None  # the optimised generator's DecodeTimes
    decoding: Optional[str] = None  # the optimised generator's decoding loop
    warm_up_seconds: Optional[float] = None  # untimed decoding of the longest batch before the run
    outputs: List[str] = field(default_factory=list, repr=False)

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


@app.command("bench")
def bench_cli(
    input_path: Path = Arg(
        ..., help="Sentences: .jsonl ({'text', 'entities'}), .tsv (IOB2) or .txt (one per line)", exists=True, dir_okay=False
    ),
    output_dir: Path = Arg(..., help="Directory for bench.json and bench.md"),
    base_model: str = Opt(DEFAULT_BASE_MODEL, "--base-model", "-m", help="Registered name, checkpoint directory or .gguf file"),
    adapter: Optional[Path] = Opt(None, "--adapter", "-a", help="LoRA adapter directory"),
    labels: str = Opt("Disease", "--labels", "-l", help="Comma-separated entity labels"),
    limit: int = Opt(32, "--limit", "-n", help="Number of sentences"),
    batch_size: int = Opt(8, "--batch-size", "-b", help="Prompts per batch"),
    max_new_tokens: int = Opt(64, "--max-new-tokens", help="Most tokens generated per sentence"),
    device: str = Opt("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N"),
    variants: Optional[str] = Opt(None, "--variants", help=f"Comma-separated ablations of the optimised run ({', '.join(VARIANTS)}), or none; default: {', '.join(DEFAULT_VARIANTS)} (on a CPU without static, and without bf16 unless the CPU has bf16 instructions)"),
    warm_up: bool = Opt(False, "--warm-up", help="Decode each optimised run's longest batch once before timing it (reported apart)"),
) -> None:
    """Compare a naive generation loop with the optimised generator and its ablations on the same sentences."""
    runs = bench(
        input_path,
        output_dir,
        base_model=base_model,
        adapter=str(adapter) if adapter else None,
        labels=[label.strip() for label in labels.split(",")],
        limit=limit,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        device=device,
        variants=None if variants is None else [] if variants.strip() in ("", "none") else [name.strip() for name in variants.split(",")],
        show_progress=True,
        warm_up=warm_up,
    )
    typer.echo(results_markdown(runs))
    typer.echo(f"Results written to {output_dir}")


def bench(
    input_path: Path,
    output_dir: Path,
    base_model: str = DEFAULT_BASE_MODEL,
    adapter: Optional[str] = None,
    labels: Sequence[str] = ("Disease",),
    limit: int = 32,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    device: str = "auto",
    variants: Optional[Sequence[str]] = (),
    show_progress: bool = False,
    warm_up: bool = False,
) -> List[BenchRun]:
    """Run the reference loop, the optimised generator and its `variants`; write bench.json and bench.md.

    variants: names in `VARIANTS`, or None for the device's defaults (`DEFAULT_VARIANTS`; on a CPU
        `CPU_DEFAULT_VARIANTS`, bf16 only where the CPU has bf16 instructions).
    warm_up: before timing each optimised run, decode its longest batch once (builds, compiles
    and captures the static decoders); the seconds it took are reported apart.
    """
    labels = check_labels(labels)
    on_cpu = resolve_device(device)[0].type == "cpu"
    if variants is None:
        variants = DEFAULT_VARIANTS if not on_cpu else [
            name for name in CPU_DEFAULT_VARIANTS if name != "bf16" or _cpu_has_bf16_instructions()]
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise ValueError(Errors.E404.format(name="variant", value=unknown[0], allowed=list(VARIANTS)))
    if adapter is None:
        variants = [name for name in variants if name != "unmerged"]
    if not on_cpu:
        variants = [name for name in variants if name != "int8"]  # int8 kernels exist on the CPU only
    records = read_bench_records(Path(input_path), limit)
    prompts = [build_prompt(record.text, labels) for record in records]
    has_gold = any(record.entities for record in records)
    settings = dict(input=str(input_path), base_model=base_model, adapter=adapter, labels=labels,
                    batch_size=batch_size, max_new_tokens=max_new_tokens, device=device)
    runs: List[BenchRun] = []

    def finish(run: BenchRun) -> None:  # results are rewritten as each run ends, so a failing run keeps the others
        run.f1 = _f1(records, run.outputs, labels) if has_gold else None
        runs.append(run)
        _write_results(runs, Path(output_dir), settings)

    with _PeakMemory() as memory:
        outputs, tokens, seconds = reference_generate(base_model, adapter, prompts, batch_size, max_new_tokens, device)
    finish(BenchRun("reference", len(prompts), seconds, tokens, *memory.peaks(), outputs=outputs))
    for name in ["optimised"] + [f"optimised, {variant}" for variant in variants]:
        options = VARIANTS.get(name.split(", ")[-1], {})
        if len(runs) > 1 and options.get("decoding") == runs[1].decoding:
            continue  # the optimised run's own loop
        if len(runs) > 1 and "draft_tokens" in options and runs[1].decoding != "continuous":
            continue  # only continuous batching drafts
        with _PeakMemory() as memory:
            generator = Generator(base_model, adapter, device, batch_size, max_new_tokens, show_progress=show_progress, **options)
            generator.model  # loading is not timed, as in the reference
            warm_up_seconds = generator.warm_up(prompts) if warm_up else None
            started = time.perf_counter()
            token_ids = generator.generate_token_ids(prompts)
            seconds = time.perf_counter() - started
            outputs = [generator.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
        finish(BenchRun(name, len(prompts), seconds, sum(map(len, token_ids)), *memory.peaks(),
                        phases=generator.times.to_dict(), decoding=generator.resolved_decoding,
                        warm_up_seconds=warm_up_seconds, outputs=outputs))
        del generator
    return runs


def _cpu_has_bf16_instructions() -> bool:
    """Whether oneDNN finds bf16 instructions (AVX512-BF16 or AMX) on this CPU."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def read_bench_records(path: Path, limit: int) -> List[Record]:
    """Sentences with any gold entities: IOB2 .tsv, .jsonl with `text` (and `entities`), or plain lines."""
    if path.suffix == ".tsv":
        records = []
        for record in read_records("iob", path):
            records.append(record)
            if len(records) >= limit:
                break
        return records
    records = []
    with path.open(encoding="utf8") as lines:
        for number, line in enumerate(lines, start=1):
            if len(records) >= limit:
                break
            if not line.strip():
                continue
            if path.suffix != ".jsonl":
                records.append(Record(f"line{number}", line.rstrip("\r\n"), ()))
                continue
            try:
                item = json.loads(line)
                entities = tuple(sorted(_entity(value) for value in item.get("entities", [])))
                records.append(Record(str(item.get("id", f"line{number}")), item["text"], entities))
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                problem = f"expected an object with 'text' and optional 'entities': {error}"
                raise ValueError(Errors.E007.format(path=path, line=number, problem=problem)) from error
    return records


def _entity(value) -> Entity:
    """An entity from `[start, end, label]` or `{"start", "end", "label"}`."""
    if isinstance(value, dict):
        return Entity(int(value["start"]), int(value["end"]), str(value["label"]))
    start, end, label = value
    return Entity(int(start), int(end), str(label))


def reference_generate(
    base_model: str, adapter: Optional[str], prompts: Sequence[str], batch_size: int, max_new_tokens: int, device: str
) -> Tuple[List[str], int, float]:
    """The naive loop: Hugging Face `generate` per batch in input order; returns outputs, tokens and seconds."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    model, tokenizer = load_model(base_model, adapter=adapter, device=device, merge_adapter=False)
    eos_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}

    class ArrayClosed(StoppingCriteria):
        def __init__(self, rows: int) -> None:
            self.trackers = [ArrayCloseTracker() for _ in range(rows)]
            self.done = torch.zeros(rows, dtype=torch.bool)

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if not self.done[row] and token not in eos_ids:
                    self.done[row] = self.trackers[row].feed(tokenizer.decode([token]))
            return self.done.to(input_ids.device)

    outputs: List[str] = []
    tokens = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = [{"input_ids": encode_prompt(tokenizer, prompt)} for prompt in prompts[start : start + batch_size]]
            inputs = tokenizer.pad(batch, return_tensors="pt").to(model.device)
            generated = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([ArrayClosed(len(batch))]),
            )[:, inputs["input_ids"].shape[1] :]
            for row in generated.tolist():
                kept = [token for token in row if token not in eos_ids]
                tokens += len(kept)
                outputs.append(tokenizer.decode(kept, skip_special_tokens=True))
    return outputs, tokens, time.perf_counter() - started


def _f1(records: Sequence[Record], outputs: Sequence[str], labels: Sequence[str]) -> float:
    """Strict entity F1 of the parsed and aligned outputs against the gold entities."""
    predicted = []
    for record, output in zip(records, outputs):
        entities = align_mentions(record.text, parse_answer(output, labels).mentions).entities
        predicted.append(Record(record.id, record.text, tuple(entities)))
    return score_records(records, predicted).overall.f1


class _PeakMemory:
    """Peak resident host memory (and peak CUDA memory) over a block of code."""

    def __enter__(self) -> "_PeakMemory":
        import torch

        self.host_mib: Optional[float] = None
        self.gpu_mib: Optional[float] = None
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.resettable = _reset_host_peak()
        return self

    def __exit__(self, *exc_info) -> None:
        import torch

        peak_kib = _host_peak_kib() if self.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.host_mib = peak_kib / 1024
        if self.cuda:
            self.gpu_mib = torch.cuda.max_memory_allocated() / 2**20

    def peaks(self) -> Tuple[float, Optional[float]]:
        return round(self.host_mib, 1), None if self.gpu_mib is None else round(self.gpu_mib, 1)


def _reset_host_peak() -> bool:
    """Reset the kernel's peak-RSS counter for this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _host_peak_kib() is not None


def _host_peak_kib() -> Optional[int]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def agreement(reference: BenchRun, run: BenchRun) -> float:
    """The share of sentences whose raw output is exactly the reference's."""
    same = sum(a == b for a, b in zip(reference.outputs, run.outputs))
    return same / max(len(reference.outputs), 1)


def speed_up(reference: BenchRun, run: BenchRun) -> float:
    """Sentences per second relative to the reference run."""
    return run.sentences_per_second / reference.sentences_per_second if reference.sentences_per_second else 0.0


def results_markdown(runs: Sequence[BenchRun]) -> str:
    """A Markdown table of the runs; speed-up and agreement are against the first run (the reference)."""
    header = ("| method | decoding | sentences/s | speed-up | generated tokens/s | peak host MiB | peak GPU MiB | agreement | F1 "
              "| tokenize s | prefill s | decode s | decode steps | ms per decode step | draft tokens kept / fed | warm-up s |")
    lines = [header, "|" + "---|" * 16]
    for run in runs:
        gpu = "-" if run.peak_gpu_mib is None else f"{run.peak_gpu_mib:.0f}"
        f1 = "-" if run.f1 is None else f"{run.f1:.3f}"
        phases = run.phases or {}
        times = [f"{phases[key]:.2f}" if key in phases else "-" for key in ("tokenize_seconds", "prefill_seconds", "decode_seconds")]
        steps = [str(phases["decode_steps"]), f"{phases['ms_per_decode_step']:.1f}"] if phases else ["-", "-"]
        steps.append(f"{phases['accepted_tokens']} / {phases['drafted_tokens']}" if phases.get("drafted_tokens") else "-")
        warm = "-" if run.warm_up_seconds is None else f"{run.warm_up_seconds:.1f}"
        lines.append(
            f"| {run.method} | {run.decoding or '-'} | {run.sentences_per_second:.2f} | {speed_up(runs[0], run):.2f}x | {run.tokens_per_second:.1f} | "
            f"{run.peak_host_mib:.0f} | {gpu} | {agreement(runs[0], run):.1%} | {f1} | " + " | ".join(times + steps + [warm]) + " |"
        )
    return "\n".join(lines)


def _write_results(runs: Sequence[BenchRun], output_dir: Path, settings: Dict[str, object]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        dict(asdict(run), sentences_per_second=run.sentences_per_second, tokens_per_second=run.tokens_per_second,
             agreement=agreement(runs[0], run), speed_up=speed_up(runs[0], run))
        for run in runs
    ]
    data = {"settings": settings, "runs": rows}
    (output_dir / RESULTS_JSON).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    (output_dir / RESULTS_MARKDOWN).write_text(results_markdown(runs) + "\n", encoding="utf8")
