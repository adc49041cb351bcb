"""Supervised fine-tuning of a LoRA adapter (or, for small models, all weights) on instruction JSONL.

The loss is the cross-entropy of the answer tokens only (arXiv 2512.22738, Sec. 3.3).
`train_adapter` is the whole loop, read top to bottom; `TrainConfig` holds its settings
as plain values and is saved beside the adapter in `bioselecttune.json`.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import Errors, Warnings, warn
from .answer_format import FORMAT_VERSION
from .encoding import EncodedExample, encode_examples
from .ifd import InstructionExample, plan_batches, read_instruction_jsonl
from .loading import DEFAULT_BASE_MODEL, attention_kernels, load_model
from .logprobs import AnswerLossSums, answer_token_loss_sums, collate, prefix_cache, shared_prompt_prefix, unwrapped_model

PathLike = Union[str, Path]
SETTINGS_FILE = "bioselecttune.json"
LOG_FILE = "train_log.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
CHECKPOINT_DIR = "checkpoint"
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
RUN_LIMITS = ("max_minutes", "compile")  # settings a resumed run may change: they bound or speed up one run
BEFORE_SETTING_EXISTED = {"share_prefix": False}  # how checkpoints written before a setting existed behaved


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, as plain values."""

    base_model: str = DEFAULT_BASE_MODEL  # registered name, checkpoint directory or .gguf file
    full_finetune: bool = False  # train all weights instead of a LoRA adapter (small models only)
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.05
    target_modules: Union[str, Tuple[str, ...]] = "all-linear"  # module names, or "all-linear"
    init_adapter: str = ""  # start from this adapter directory's LoRA weights (continued training); "" = fresh
    learning_rate: float = 2e-4  # peak learning rate, reached after warmup
    min_lr_ratio: float = 0.1  # the schedule decays to learning_rate * min_lr_ratio
    lr_schedule: str = "cosine"  # cosine, linear or constant after warmup
    warmup_steps: int = 10
    epochs: int = 3  # passes over the data; ignored when max_steps > 0
    max_steps: int = 0  # optimizer steps; 0 = as many as `epochs` take
    max_minutes: float = 0.0  # stop and save after this much training time in one run; 0 = no limit
    batch_size: int = 8  # examples per micro-batch
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    weight_decay: float = 0.0  # AdamW decay on matrices (never on biases or norms)
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 = no clipping
    max_seq_len: int = 512  # longer examples are skipped and counted
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16 autocast
    compile: bool = False  # torch.compile the decoder: fused kernels, fewer launches (for GPUs that wait on the host)
    share_prefix: bool = True  # batch examples by label list; run their shared instruction once per batch
    seed: int = 0
    log_every: int = 10  # optimizer steps per log line
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints; 0 = none

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(Errors.E404.format(name="lr_schedule", value=self.lr_schedule, allowed=list(SCHEDULES)))
        if self.precision not in PRECISIONS:
            raise ValueError(Errors.E404.format(name="precision", value=self.precision, allowed=list(PRECISIONS)))
        for name in ("lora_r", "batch_size", "grad_accum_steps", "max_seq_len", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(Errors.E405.format(name=name, value=getattr(self, name), allowed="an integer >= 1"))
        if self.max_minutes < 0:
            raise ValueError(Errors.E405.format(name="max_minutes", value=self.max_minutes, allowed="0 (no limit) or more"))
        if self.init_adapter and self.full_finetune:
            raise ValueError(Errors.E405.format(name="init_adapter", value=self.init_adapter, allowed='"" with full_finetune'))
        if self.epochs < 1 and self.max_steps < 1:
            raise ValueError(Errors.E405.format(name="epochs or max_steps", value=0, allowed="at least 1"))

    @classmethod
    def from_dict(cls, values: Mapping[str, object], source: str = "settings") -> "TrainConfig":
        """Build from a mapping, rejecting unknown keys."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(Errors.E408.format(keys=unknown, source=source, known=known))
        return cls(**values)

    def to_dict(self) -> Dict[str, object]:
        values = asdict(self)
        if isinstance(self.target_modules, tuple):
            values["target_modules"] = list(self.target_modules)
        return values


@dataclass
class TrainSummary:
    """What a training run did, saved in `bioselecttune.json`."""

    steps: int
    epochs: float
    examples: int
    skipped_too_long: int
    tokens: int
    final_loss: float
    dev_loss: Optional[float]
    seconds: float
    tokens_per_second: float
    resumed_from_step: int
    stopped_at_time_limit: bool = False


def learning_rate_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup, then a cosine or linear decay to `learning_rate * min_lr_ratio` (or constant)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    min_lr = cfg.learning_rate * cfg.min_lr_ratio
    if cfg.lr_schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - min_lr)
    return cfg.learning_rate - progress * (cfg.learning_rate - min_lr)


def training_autocast(precision: str, device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory for the forward pass: bf16 autocast (weights and gradients stay fp32) or none.

    "auto" is bf16 on CUDA and fp32 on CPU, where bf16 only pays on CPUs with bf16 instructions.
    """
    import torch

    if precision == "bf16" or (precision == "auto" and device_type == "cuda"):
        return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, groups: Optional[Sequence[object]] = None
) -> List[List[int]]:
    """One epoch's batches: shuffle, sort within chunks of 50 batches by (group,) length, then shuffle the batches.

    Batches hold examples of similar length (little padding), and of one group where `groups`
    gives each example's (e.g. its label list, so a batch shares one prompt prefix), yet come
    in random order; the order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    group_of = groups if groups is not None else [()] * len(lengths)
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: List[List[int]] = []
    for start in range(0, len(order), chunk):
        grouped = sorted(order[start : start + chunk], key=lambda i: (group_of[i], lengths[i]))
        batches += [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return batches


def encode_for_training(
    tokenizer, examples: Sequence[InstructionExample], max_seq_len: int, path: PathLike
) -> Tuple[List[EncodedExample], List[Tuple[str, ...]]]:
    """Encode prompt + answer + EOS, and give each its label list; skip (and warn about) examples longer than `max_seq_len`."""
    encoded, label_lists, too_long = [], [], []
    items = encode_examples(tokenizer, [example.prompt for example in examples], [example.answer for example in examples])
    for example, item in zip(examples, items):
        if len(item.input_ids) > max_seq_len:
            too_long.append(example.id)
        else:
            encoded.append(item)
            label_lists.append(tuple(example.labels))
    if too_long:
        warn(Warnings.W401.format(count=len(too_long), path=path, max_len=max_seq_len, example=too_long[0]))
    if not encoded:
        raise ValueError(Errors.E406.format(path=path, max_len=max_seq_len, count=len(examples)))
    return encoded, label_lists


def batch_loss_sums(model, batch: Sequence[EncodedExample], pad_id: int, share_prefix: bool) -> AnswerLossSums:
    """Answer-token loss sums of one batch; with `share_prefix`, the tokens all its prompts start with run once."""
    shared = shared_prompt_prefix(batch) if share_prefix else []
    prefix = prefix_cache(model, shared) if shared else None
    return answer_token_loss_sums(model, collate(batch, pad_id, len(shared)), prefix)


def trained_labels(examples: Sequence[InstructionExample]) -> List[str]:
    """The union of the examples' labels, in order of first appearance."""
    return list(dict.fromkeys(label for example in examples for label in example.labels))


def trained_label_sets(examples: Sequence[InstructionExample]) -> List[List[str]]:
    """The distinct label lists the examples' prompts name, in order of first appearance."""
    return [list(labels) for labels in dict.fromkeys(example.labels for example in examples if example.labels)]


def load_initial_adapter(model, cfg: TrainConfig) -> None:
    """Copy the LoRA weights of `cfg.init_adapter` into `model`; its rank, alpha and modules must match."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(cfg.init_adapter)
    config_path, weights_path = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ValueError(Errors.E411.format(path=directory, problem="no adapter_config.json and adapter_model.safetensors"))
    saved = json.loads(config_path.read_text(encoding="utf8"))
    wanted = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha}
    if not isinstance(cfg.target_modules, str):
        wanted["target_modules"] = sorted(cfg.target_modules)
        saved["target_modules"] = sorted(saved.get("target_modules") or [])
    differ = {key: (saved.get(key), value) for key, value in wanted.items() if saved.get(key) != value}
    if differ:
        found = ", ".join(f"{key} {old!r} (training asks for {new!r})" for key, (old, new) in differ.items())
        raise ValueError(Errors.E411.format(path=directory, problem=f"it has {found}"))
    weights = load_file(str(weights_path))
    result = set_peft_model_state_dict(model, weights)
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    loaded = {name for name in expected if name not in set(result.missing_keys)}
    if result.unexpected_keys or loaded != expected:
        missing = sorted(expected - loaded)
        problem = f"{len(result.unexpected_keys)} unexpected and {len(missing)} missing LoRA tensors"
        raise ValueError(Errors.E411.format(path=directory, problem=problem))


def dev_loss(
    model, examples: Sequence[EncodedExample], pad_id: int, batch_size: int, autocast, groups: Optional[Sequence[object]] = None
) -> float:
    """Mean cross-entropy per answer token over `examples`, without dropout or gradients.

    With `groups` (each example's label list), batches hold one group and share its prompt prefix.
    """
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for batch in plan_batches([len(e.input_ids) for e in examples], batch_size, groups):
            sums = batch_loss_sums(model, [examples[i] for i in batch], pad_id, groups is not None)
            total += sums.sums.sum().item()
            count += int(sums.counts.sum().item())
    model.train()
    return total / max(1, count)


def train_adapter(
    cfg: TrainConfig,
    train_path: PathLike,
    output_dir: PathLike,
    dev_path: Optional[PathLike] = None,
    device: str = "auto",
    show_progress: bool = False,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> TrainSummary:
    """Fine-tune on `train_path` and save the adapter, `bioselecttune.json`, the log and a loss curve.

    A checkpoint in `output_dir/checkpoint` (written every `cfg.checkpoint_every` steps) is
    resumed exactly: weights, optimizer, RNG states and data position. It is removed once
    the adapter is saved.
    on_step: called as `on_step(step, loss)` after each optimizer step (and its checkpoint).
    """
    import torch
    from tqdm import tqdm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output_dir / CHECKPOINT_DIR

    # data
    examples = read_instruction_jsonl(train_path)
    dev_examples = read_instruction_jsonl(dev_path) if dev_path is not None else []

    # model: the base, then LoRA layers on it (their initial weights come from the seed)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg.base_model, device=device, trainable=True)
    if cfg.full_finetune:
        model.float()
    else:
        from peft import LoraConfig, TaskType, get_peft_model

        target = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
        lora = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=target,
        )
        model = get_peft_model(model, lora)
        if cfg.init_adapter:
            load_initial_adapter(model, cfg)
    model.train()
    if cfg.compile:  # in place: parameter names, checkpoints and the saved adapter stay as they are
        unwrapped_model(model).get_decoder().compile(dynamic=True)
    model_device = next(model.parameters()).device
    autocast = training_autocast(cfg.precision, model_device.type)
    pad_id = tokenizer.pad_token_id
    train_set, label_lists = encode_for_training(tokenizer, examples, cfg.max_seq_len, train_path)
    dev_set, dev_label_lists = encode_for_training(tokenizer, dev_examples, cfg.max_seq_len, dev_path) if dev_examples else ([], [])
    batch_groups = label_lists if cfg.share_prefix else None
    dev_groups = dev_label_lists if cfg.share_prefix else None
    lengths = [len(e.input_ids) for e in train_set]
    batches_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * batches_per_epoch / cfg.grad_accum_steps)

    # optimizer: AdamW, weight decay on matrices only
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    groups = [
        {"params": [p for p in trainable.values() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in trainable.values() if p.dim() < 2], "weight_decay": 0.0},
    ]
    # on a GPU, one fused kernel updates every tensor (fewer launches for the host to make)
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=True if model_device.type == "cuda" else None)

    # resume: weights, optimizer, RNG states and the position in the data stream
    step, micro_batch, tokens_seen = 0, 0, 0
    if (checkpoint_dir / "state.pt").is_file():
        state = torch.load(checkpoint_dir / "state.pt", map_location="cpu", weights_only=True)
        defaults = {**TrainConfig().to_dict(), **BEFORE_SETTING_EXISTED}  # for settings added since the checkpoint
        changed = sorted(
            k for k, v in cfg.to_dict().items() if k not in RUN_LIMITS and state["config"].get(k, defaults[k]) != v
        )
        if changed:
            raise ValueError(Errors.E407.format(path=checkpoint_dir, changed=changed))
        with torch.no_grad():
            for name, value in state["weights"].items():
                trainable[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        step, micro_batch, tokens_seen = state["step"], state["micro_batch"], state["tokens_seen"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    resumed_from = step
    log_rows = _read_log(output_dir / LOG_FILE, up_to_step=step)
    _write_log(output_dir / LOG_FILE, log_rows)

    # the loop: one optimizer step per iteration
    order_epoch, order = -1, []
    interval_losses: List["torch.Tensor"] = []  # read at log lines only: reading a GPU value waits for the GPU
    interval_tokens, interval_start = 0, time.perf_counter()
    run_tokens, run_start = 0, time.perf_counter()
    last_dev: Optional[float] = None
    progress = tqdm(total=total_steps, initial=step, unit="step", desc="Training", disable=not show_progress)
    with open(output_dir / LOG_FILE, "a", encoding="utf8") as log, attention_kernels():
        while step < total_steps:
            lr = learning_rate_at(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # this step's micro-batches, taken from the seeded per-epoch order
            micro = []
            for m in range(micro_batch, micro_batch + cfg.grad_accum_steps):
                epoch = m // batches_per_epoch
                if epoch != order_epoch:
                    order_epoch, order = epoch, length_grouped_batches(lengths, cfg.batch_size, cfg.seed, epoch, batch_groups)
                micro.append([train_set[i] for i in order[m % batches_per_epoch]])
            answer_tokens = sum(e.answer_length for batch in micro for e in batch)

            # forward and backward; the loss is summed over answer tokens / their count
            step_loss = torch.zeros((), device=model_device)
            for batch in micro:
                with autocast():
                    sums = batch_loss_sums(model, batch, pad_id, cfg.share_prefix)
                    loss = sums.sums.sum() / answer_tokens
                loss.backward()
                step_loss += loss.detach()
                interval_tokens += sum(len(e.input_ids) for e in batch)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable.values(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            micro_batch += cfg.grad_accum_steps
            interval_losses.append(step_loss)

            # dev loss at the end of each epoch and of training (also when max_minutes ends it early)
            epoch_done = micro_batch // batches_per_epoch > (micro_batch - cfg.grad_accum_steps) // batches_per_epoch
            time_up = step < total_steps and cfg.max_minutes > 0 and time.perf_counter() - run_start >= cfg.max_minutes * 60
            dev_now = None
            if dev_set and (epoch_done or step == total_steps or time_up):
                dev_now = last_dev = dev_loss(model, dev_set, pad_id, cfg.batch_size, autocast, dev_groups)

            # log
            progress.update(1)
            if step % cfg.log_every == 0 or step == total_steps or time_up or dev_now is not None:
                losses = torch.stack(interval_losses).tolist()  # waits for the device: the interval's time is its own
                seconds = time.perf_counter() - interval_start
                row = {
                    "step": step,
                    "epoch": round(micro_batch / batches_per_epoch, 4),
                    "loss": sum(losses) / len(losses),
                    "lr": lr,
                    "tokens_per_second": interval_tokens / seconds if seconds > 0 else 0.0,
                }
                if dev_now is not None:
                    row["dev_loss"] = dev_now
                log.write(json.dumps(row) + "\n")
                log.flush()
                log_rows.append(row)
                progress.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_second']:.0f}")
                tokens_seen += interval_tokens
                run_tokens += interval_tokens
                interval_losses, interval_tokens, interval_start = [], 0, time.perf_counter()

            # checkpoint (also when max_minutes ends the run, so that running again continues it)
            if time_up or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps):
                _save_checkpoint(checkpoint_dir, cfg, trainable, optimizer, step, micro_batch, tokens_seen + interval_tokens)
            if on_step is not None:
                on_step(step, step_loss.item())
            if time_up:
                warn(Warnings.W403.format(minutes=cfg.max_minutes, step=step, total=total_steps,
                                          epoch=round(micro_batch / batches_per_epoch, 2), path=output_dir))
                break
    progress.close()

    # save: adapter (or full weights), settings and summary, loss curve; drop the checkpoint
    seconds = time.perf_counter() - run_start
    if cfg.full_finetune:
        tokenizer.save_pretrained(output_dir)
        model.save_pretrained(output_dir)
    else:
        model.peft_config["default"].base_model_name_or_path = cfg.base_model  # the name, not the cache path
        model.save_pretrained(output_dir, save_embedding_layers=False)  # vocabulary unchanged: no hub lookup
    summary = TrainSummary(
        steps=step,
        epochs=round(micro_batch / batches_per_epoch, 4),
        examples=len(train_set),
        skipped_too_long=len(examples) - len(train_set),
        tokens=tokens_seen,
        final_loss=log_rows[-1]["loss"] if log_rows else math.nan,
        dev_loss=last_dev,
        seconds=round(seconds, 2),
        tokens_per_second=run_tokens / seconds if seconds > 0 else 0.0,
        resumed_from_step=resumed_from,
        stopped_at_time_limit=step < total_steps,
    )
    settings = {
        "format_version": FORMAT_VERSION,
        "labels": trained_labels(examples),
        "label_sets": trained_label_sets(examples),
        "base_model": cfg.base_model,
        "full_finetune": cfg.full_finetune,
        "train_config": cfg.to_dict(),
        "summary": asdict(summary),
    }
    (output_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf8")
    _plot_log(log_rows, output_dir / LOSS_CURVE_FILE)
    if step == total_steps:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return summary


def _save_checkpoint(directory: Path, cfg: TrainConfig, trainable, optimizer, step: int, micro_batch: int, tokens: int) -> None:
    """Write everything an exact resume needs, replacing the previous checkpoint in one rename."""
    import torch

    state = {
        "config": cfg.to_dict(),
        "weights": {name: p.detach().cpu().clone() for name, p in trainable.items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "micro_batch": micro_batch,
        "tokens_seen": tokens,
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / "state.pt.partial"
    torch.save(state, partial)
    partial.replace(directory / "state.pt")


def _read_log(path: Path, up_to_step: int) -> List[Dict[str, object]]:
    """Log rows up to and including `up_to_step` (a resumed run rewrites the rest)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row["step"] > up_to_step:
            break
        rows.append(row)
    return rows


def _write_log(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf8")


def _plot_log(rows: Sequence[Mapping[str, object]], out_path: Path) -> Path:
    from .plots import plot_loss_curve

    dev = [row for row in rows if "dev_loss" in row]
    return plot_loss_curve(
        [row["step"] for row in rows],
        [row["loss"] for row in rows],
        out_path,
        dev_steps=[row["step"] for row in dev],
        dev_losses=[row["dev_loss"] for row in dev],
    )
