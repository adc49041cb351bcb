"""Hybrid Superfiltering: IFD scores from a weak model, and the curated subsets built from them.

Implements the data selection of BioSelectTune (Chen, Su and Sun, arXiv 2512.22738, Sec. 3.2),
after Superfiltering (Li et al., 2024). IFD(x, y) = L(y | x) / L(y), where L is the mean
cross-entropy per answer token (the answer string plus EOS) under the weak model:

- L(y | x), the conditional loss: the prompt is the context; every answer token and the
  EOS are scored.
- L(y), the unconditional loss: the answer alone. When the tokenizer prepends a BOS
  token, the sequence is BOS + answer + EOS and every answer token and the EOS are
  scored. Without a BOS the first answer token has no context, so it only serves as
  context and the loss averages over the remaining answer tokens and the EOS (as a
  causal LM scores `answer + EOS` on its own, which is also what Superfiltering's
  reference code does).

The answer is tokenized on its own in both cases, so both losses see the same answer tokens.
`metric="ppl_ratio"` gives Superfiltering's perplexity ratio exp(L(y|x) - L(y)) instead;
both are >= 1 exactly when L(y|x) >= L(y), so they exclude the same examples but rank
the rest differently.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ..errors import Errors, Warnings, warn
from .answer_format import EMPTY_ANSWER
from .encoding import encode_examples
from .loading import attention_kernels, load_model
from .logprobs import answer_token_losses, collate, prefix_cache, shared_prompt_prefix
from .parser import parse_answer

PathLike = Union[str, Path]
METRICS = ("loss_ratio", "ppl_ratio")
STRATEGIES = ("hybrid", "ifd", "random", "full")
CLASSES = ("positive", "negative")


@dataclass(frozen=True)
class InstructionExample:
    """One line of an instruction JSONL file: a prompt, its gold answer, and the raw line."""

    id: str
    prompt: str
    answer: str
    positive: bool
    labels: Tuple[str, ...] = ()
    text: str = ""
    line: str = ""


def read_instruction_jsonl(path: PathLike) -> List[InstructionExample]:
    """Read instruction examples (`id`, `prompt`, `answer`, optional `positive`, `labels`, `text`)."""
    examples: List[InstructionExample] = []
    first_line: Dict[str, int] = {}
    with open(path, encoding="utf8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(Errors.E400.format(path=path, line=number, problem=f"not JSON: {err}")) from None
            missing = [key for key in ("id", "prompt", "answer") if not isinstance(data.get(key), str)]
            if missing:
                problem = f"missing or non-string field(s) {missing}"
                raise ValueError(Errors.E400.format(path=path, line=number, problem=problem))
            example_id = data["id"]
            if example_id in first_line:
                raise ValueError(Errors.E401.format(path=path, line=number, id=example_id, first=first_line[example_id]))
            first_line[example_id] = number
            positive = data.get("positive", data["answer"] != EMPTY_ANSWER)
            examples.append(
                InstructionExample(
                    id=example_id,
                    prompt=data["prompt"],
                    answer=data["answer"],
                    positive=bool(positive),
                    labels=tuple(data.get("labels", ())),
                    text=data.get("text", ""),
                    line=line.rstrip("\n"),
                )
            )
    return examples


# --- IFD values and score files ---------------------------------------------------------


@dataclass(frozen=True)
class IFDScore:
    """Both losses of one example and its IFD (None when not finite)."""

    id: str
    loss_cond: float
    loss_uncond: float
    ifd: Optional[float]


def ifd_value(loss_cond: float, loss_uncond: float, metric: str = "loss_ratio") -> Optional[float]:
    """IFD from the two mean answer-token losses; None when the result is NaN or infinite."""
    if metric not in METRICS:
        raise ValueError(Errors.E404.format(name="metric", value=metric, allowed=list(METRICS)))
    if not (math.isfinite(loss_cond) and math.isfinite(loss_uncond)):
        return None
    if metric == "ppl_ratio":
        value = math.exp(loss_cond - loss_uncond) if loss_cond - loss_uncond < 700 else math.inf
    else:
        value = loss_cond / loss_uncond if loss_uncond != 0 else math.nan
    return value if math.isfinite(value) else None


def _json_float(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def _score_from_json(data: Mapping, metric: str) -> IFDScore:
    loss_cond = math.nan if data["loss_cond"] is None else float(data["loss_cond"])
    loss_uncond = math.nan if data["loss_uncond"] is None else float(data["loss_uncond"])
    return IFDScore(str(data["id"]), loss_cond, loss_uncond, ifd_value(loss_cond, loss_uncond, metric))


def read_scores(path: PathLike, metric: str = "loss_ratio") -> Dict[str, IFDScore]:
    """Scores by id, with IFD recomputed from the stored losses under `metric`.

    A last line cut short by an interrupted run is ignored; any other bad line raises.
    """
    scores: Dict[str, IFDScore] = {}
    for _, data in _score_lines(path):
        if data is None:
            continue
        scores[str(data["id"])] = _score_from_json(data, metric)
    return scores


def _score_lines(path: PathLike) -> Iterable[Tuple[int, Optional[dict]]]:
    """(line number, parsed line) pairs; None marks a truncated last line."""
    with open(path, encoding="utf8") as file:
        lines = file.readlines()
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or not {"id", "loss_cond", "loss_uncond"} <= data.keys():
                raise ValueError("lacks id, loss_cond or loss_uncond")
            if not line.endswith("\n"):
                raise ValueError("no line end")
        except ValueError as err:
            if is_last:
                yield number, None
                continue
            raise ValueError(Errors.E402.format(path=path, line=number, problem=err)) from None
        yield number, data


def repair_scores_file(path: PathLike, base_model: Optional[str] = None) -> Set[str]:
    """Ids already scored in `path`; a truncated last line is cut off the file first.

    base_model: when given, a line scored by another weak model raises, so a resumed run
    never mixes models.
    """
    path = Path(path)
    if not path.exists():
        return set()
    finished: Set[str] = set()
    for number, data in _score_lines(path):
        if data is not None and base_model is not None and data.get("model", base_model) != base_model:
            raise ValueError(Errors.E409.format(path=path, line=number, found=data["model"], model=base_model))
        if data is None:
            with open(path, "r+b") as file:
                raw = file.read()
                file.truncate(raw.rfind(b"\n", 0, len(raw) - 1) + 1)
            warn(Warnings.W400.format(path=path))
            break
        finished.add(str(data["id"]))
    return finished


@dataclass
class ScoringRun:
    """What one `score_examples` call did."""

    total: int
    already_scored: int
    scored: int
    seconds: float
    stopped_early: bool

    @property
    def examples_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def plan_batches(lengths: Sequence[int], batch_size: int, groups: Optional[Sequence[object]] = None) -> List[List[int]]:
    """Indices grouped into batches of similar length, longest first; ties keep input order.

    With `groups` (e.g. each example's label list), a group's examples are batched together.
    """
    group_of = groups if groups is not None else [()] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (group_of[i], -lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class AnswerAloneLosses:
    """L(y) of each distinct answer, computed one planned batch at a time when first asked for.

    Examples with the same answer (every negative's `[]`, for one) share one computation. The
    batches are planned over all distinct answers, so a resumed run gets the same values.
    """

    def __init__(self, model, tokenizer, answers: Iterable[str], batch_size: int) -> None:
        self.model = model
        self.pad_id = tokenizer.pad_token_id
        distinct = list(dict.fromkeys(answers))
        self.encoded = dict(zip(distinct, encode_examples(tokenizer, [""] * len(distinct), distinct)))
        batches = plan_batches([len(self.encoded[answer].input_ids) for answer in distinct], batch_size)
        self.batch_of = {distinct[i]: [distinct[j] for j in batch] for batch in batches for i in batch}
        self.losses: Dict[str, float] = {}

    def __getitem__(self, answer: str) -> float:
        if answer not in self.losses:
            batch = self.batch_of[answer]
            losses = answer_token_losses(self.model, collate([self.encoded[a] for a in batch], self.pad_id))
            self.losses.update(zip(batch, losses.float().cpu().tolist()))
        return self.losses[answer]


def score_examples(
    examples: Sequence[InstructionExample],
    output_path: PathLike,
    base_model: str,
    batch_size: int = 16,
    device: str = "auto",
    max_batches: Optional[int] = None,
    show_progress: bool = False,
) -> ScoringRun:
    """Append one JSON line (id, model, loss_cond, loss_uncond, ifd) per example to `output_path`.

    Ids already in the file are skipped, so an interrupted run resumes where it stopped.
    The batches are planned over all examples, so resumed scores are the same as those of an
    uninterrupted run. The `ifd` column is the loss ratio. Each batch holds examples of one
    label list where it can, and the prompt prefix its examples share (the instruction) runs
    once per batch, its key/value states reused by every row.
    max_batches: stop after scoring this many batches (None: score everything).
    """
    import torch
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(Errors.E405.format(name="batch_size", value=batch_size, allowed="an integer >= 1"))
    finished = repair_scores_file(output_path, base_model)
    todo = sum(1 for example in examples if example.id not in finished)
    already = len(examples) - todo
    if todo == 0:
        return ScoringRun(len(examples), already, 0, 0.0, False)
    model, tokenizer = load_model(base_model, device=device)
    model.eval()
    pad_id = tokenizer.pad_token_id
    start = time.perf_counter()  # the speed counts tokenization and every forward pass, not loading
    conditional = encode_examples(tokenizer, [example.prompt for example in examples], [example.answer for example in examples])
    answer_alone = AnswerAloneLosses(model, tokenizer, (example.answer for example in examples), batch_size)
    batches = plan_batches([len(encoded.input_ids) for encoded in conditional], batch_size, [example.labels for example in examples])
    progress = tqdm(total=todo, unit="ex", desc="IFD scoring", disable=not show_progress)
    scored = 0
    batches_done = 0
    with open(output_path, "a", encoding="utf8") as out, torch.inference_mode(), attention_kernels():
        for batch in batches:
            new = [i for i in batch if examples[i].id not in finished]
            if not new:
                continue
            if max_batches is not None and batches_done >= max_batches:
                break
            batch_examples = [conditional[i] for i in batch]
            shared = shared_prompt_prefix(batch_examples)
            prefix = prefix_cache(model, shared) if shared else None
            losses_cond = answer_token_losses(model, collate(batch_examples, pad_id, len(shared)), prefix).float().cpu().tolist()
            for position, index in enumerate(batch):
                if index not in new:
                    continue
                loss_cond, loss_uncond = losses_cond[position], answer_alone[examples[index].answer]
                line = {
                    "id": examples[index].id,
                    "model": base_model,
                    "loss_cond": _json_float(loss_cond),
                    "loss_uncond": _json_float(loss_uncond),
                    "ifd": ifd_value(loss_cond, loss_uncond),
                }
                out.write(json.dumps(line) + "\n")
            out.flush()
            os.fsync(out.fileno())
            scored += len(new)
            batches_done += 1
            progress.update(len(new))
    progress.close()
    seconds = time.perf_counter() - start
    return ScoringRun(len(examples), already, scored, seconds, already + scored < len(examples))


# --- selection ---------------------------------------------------------------------------


@dataclass
class ClassCounts:
    """How the examples of one class (positive or negative) fared."""

    total: int = 0
    excluded_ifd_ge_1: int = 0
    excluded_nonfinite: int = 0
    eligible: int = 0
    kept: int = 0

    @property
    def dropped(self) -> int:
        return self.total - self.kept

    def to_dict(self) -> Dict[str, int]:
        return {**asdict(self), "dropped": self.dropped}


@dataclass
class Selection:
    """The ids a strategy keeps (in input order) with per-class counts."""

    strategy: str
    kept_ids: List[str]
    counts: Dict[str, ClassCounts] = field(default_factory=dict)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(Errors.E405.format(name=name, value=value, allowed="a number in [0, 1]"))


def _eligibility(
    examples: Sequence[InstructionExample], ifds: Mapping[str, Optional[float]], filtered: Sequence[str] = CLASSES
) -> Tuple[Dict[str, ClassCounts], Dict[str, List[InstructionExample]]]:
    """Per-class counts of exclusions, and the eligible examples per class.

    In the `filtered` classes only examples with a finite IFD < 1 are eligible; in the others, all are.
    """
    counts = {name: ClassCounts() for name in CLASSES}
    eligible: Dict[str, List[InstructionExample]] = {name: [] for name in CLASSES}
    for example in examples:
        name = "positive" if example.positive else "negative"
        counts[name].total += 1
        if name not in filtered:  # no score needed: `full` selects without any
            counts[name].eligible += 1
            eligible[name].append(example)
            continue
        value = ifds[example.id]
        if value is None:
            counts[name].excluded_nonfinite += 1
        elif value >= 1.0:
            counts[name].excluded_ifd_ge_1 += 1
        else:
            counts[name].eligible += 1
            eligible[name].append(example)
    return counts, eligible


def top_by_ifd(
    candidates: Sequence[InstructionExample], ifds: Mapping[str, Optional[float]], ratio: float
) -> List[InstructionExample]:
    """The floor(ratio * len(candidates)) candidates with the highest IFD; ties keep input order."""
    keep = math.floor(ratio * len(candidates) + 1e-9)
    ranked = sorted(range(len(candidates)), key=lambda i: (-ifds[candidates[i].id], i))
    return [candidates[i] for i in ranked[:keep]]


def _sample(candidates: Sequence[InstructionExample], count: int, rng: random.Random) -> List[InstructionExample]:
    return rng.sample(list(candidates), count) if count < len(candidates) else list(candidates)


def _finish(strategy: str, examples: Sequence[InstructionExample], kept, counts: Dict[str, ClassCounts]) -> Selection:
    kept_ids = {example.id for example in kept}
    for example in examples:
        if example.id in kept_ids:
            counts["positive" if example.positive else "negative"].kept += 1
    return Selection(strategy, [e.id for e in examples if e.id in kept_ids], counts)


def select_hybrid_subset(
    examples: Sequence[InstructionExample],
    ifds: Mapping[str, Optional[float]],
    ratio: float = 0.5,
    negatives_ratio: float = 1.0,
    seed: int = 0,
) -> Selection:
    """Top `ratio` of eligible positives by IFD, plus a seeded `negatives_ratio` share of all negatives.

    Positives with IFD >= 1 or a non-finite IFD are excluded before ranking; negatives are
    never filtered by IFD.
    """
    _check_fraction("ratio", ratio)
    _check_fraction("negatives_ratio", negatives_ratio)
    counts, eligible = _eligibility(examples, ifds, filtered=("positive",))
    positives = top_by_ifd(eligible["positive"], ifds, ratio)
    negatives = eligible["negative"]
    keep_negatives = math.floor(negatives_ratio * len(negatives) + 1e-9)
    kept = positives + _sample(negatives, keep_negatives, random.Random(seed))
    return _finish("hybrid", examples, kept, counts)


def select_ifd_subset(
    examples: Sequence[InstructionExample], ifds: Mapping[str, Optional[float]], ratio: float = 0.5
) -> Selection:
    """Plain Superfiltering: top `ratio` of all eligible examples (finite IFD < 1) by IFD."""
    _check_fraction("ratio", ratio)
    counts, eligible = _eligibility(examples, ifds)
    eligible_ids = {example.id for name in CLASSES for example in eligible[name]}
    pool = [example for example in examples if example.id in eligible_ids]
    return _finish("ifd", examples, top_by_ifd(pool, ifds, ratio), counts)


def select_random_subset(
    examples: Sequence[InstructionExample],
    ifds: Mapping[str, Optional[float]],
    ratio: float = 0.5,
    negatives_ratio: float = 1.0,
    seed: int = 0,
) -> Selection:
    """The control: as many positives and negatives as `hybrid` keeps, drawn at random from each class."""
    hybrid = select_hybrid_subset(examples, ifds, ratio, negatives_ratio, seed)
    counts, pools = _eligibility(examples, ifds, filtered=())
    rng = random.Random(seed)
    kept: List[InstructionExample] = []
    for name in CLASSES:
        kept += _sample(pools[name], hybrid.counts[name].kept, rng)
    return _finish("random", examples, kept, counts)


def select_subset(
    strategy: str,
    examples: Sequence[InstructionExample],
    ifds: Mapping[str, Optional[float]],
    ratio: float = 0.5,
    negatives_ratio: float = 1.0,
    seed: int = 0,
) -> Selection:
    """Dispatch to one of `STRATEGIES`; `full` keeps everything."""
    if strategy == "hybrid":
        return select_hybrid_subset(examples, ifds, ratio, negatives_ratio, seed)
    if strategy == "ifd":
        return select_ifd_subset(examples, ifds, ratio)
    if strategy == "random":
        return select_random_subset(examples, ifds, ratio, negatives_ratio, seed)
    if strategy == "full":
        counts, _ = _eligibility(examples, ifds, filtered=())
        return _finish("full", examples, examples, counts)
    raise ValueError(Errors.E404.format(name="strategy", value=strategy, allowed=list(STRATEGIES)))


# --- report ------------------------------------------------------------------------------


def _summary(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"count": 0, "min": None, "median": None, "mean": None, "max": None}
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {
        "count": len(ordered),
        "min": ordered[0],
        "median": median,
        "mean": sum(ordered) / len(ordered),
        "max": ordered[-1],
    }


def selection_groups(
    examples: Sequence[InstructionExample], selection: Selection
) -> Dict[str, List[InstructionExample]]:
    """The examples as "kept positives", "kept negatives", "dropped positives" and "dropped negatives"."""
    kept = set(selection.kept_ids)
    return {
        f"{status} {name}s": [
            e for e in examples if e.positive == (name == "positive") and (e.id in kept) == (status == "kept")
        ]
        for status in ("kept", "dropped")
        for name in CLASSES
    }


def ifd_series(
    examples: Sequence[InstructionExample], ifds: Mapping[str, Optional[float]], selection: Selection
) -> Dict[str, List[float]]:
    """Finite IFD values grouped as "kept positives", "dropped positives", and so on."""
    return {
        group: [ifds[e.id] for e in members if ifds[e.id] is not None]
        for group, members in selection_groups(examples, selection).items()
    }


def subset_profile(examples: Sequence[InstructionExample], selection: Selection) -> Dict[str, Dict[str, object]]:
    """Per group ("kept positives", "dropped negatives", ...): its size, names in the gold answers
    (in all and per example) and characters of text per example: what the selection favours."""
    profile: Dict[str, Dict[str, object]] = {}
    for group, members in selection_groups(examples, selection).items():
        names = [len(parse_answer(e.answer, e.labels).mentions) for e in members]
        profile[group] = {
            "count": len(members),
            "names": sum(names),
            "names_per_example": _summary(names)["mean"],
            "characters_per_example": _summary([len(e.text) for e in members])["mean"],
        }
    return profile


def curation_report(
    examples: Sequence[InstructionExample],
    ifds: Mapping[str, Optional[float]],
    selection: Selection,
    settings: Mapping[str, object],
    show: int = 5,
) -> Dict[str, object]:
    """Counts per class, IFD summaries and profiles of kept vs dropped, and the extreme kept examples."""
    by_id = {example.id: example for example in examples}
    scored_kept = sorted(
        (i for i in selection.kept_ids if ifds[i] is not None), key=lambda i: (-ifds[i], i)
    )

    def describe(example_id: str) -> Dict[str, object]:
        example = by_id[example_id]
        return {"id": example_id, "ifd": ifds[example_id], "positive": example.positive,
                "text": example.text, "answer": example.answer}

    return {
        "settings": dict(settings),
        "strategy": selection.strategy,
        "total": len(examples),
        "kept": len(selection.kept_ids),
        "counts": {name: counts.to_dict() for name, counts in selection.counts.items()},
        "ifd": {name: _summary(values) for name, values in ifd_series(examples, ifds, selection).items()},
        "profile": subset_profile(examples, selection),
        "highest_kept": [describe(i) for i in scored_kept[:show]],
        "lowest_kept": [describe(i) for i in reversed(scored_kept[-show:])] if scored_kept else [],
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def report_markdown(report: Mapping[str, object], histogram: Optional[str] = None) -> str:
    """The curation report as Markdown."""
    settings = report["settings"]
    lines = [
        f"# Curation report: {report['strategy']}",
        "",
        "Settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()),
        "",
        f"Kept {report['kept']} of {report['total']} examples.",
        "",
        "| class | total | IFD >= 1 | non-finite IFD | eligible | kept | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in report["counts"].items():
        row = [name, c["total"], c["excluded_ifd_ge_1"], c["excluded_nonfinite"], c["eligible"], c["kept"], c["dropped"]]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    lines += ["", "| IFD of | count | min | median | mean | max |", "|---|---|---|---|---|---|"]
    for name, s in report["ifd"].items():
        row = [name, s["count"], s["min"], s["median"], s["mean"], s["max"]]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    lines += ["", "| group | count | names in answers | names per example | characters per example |", "|---|---|---|---|---|"]
    for name, p in report["profile"].items():
        row = [name, p["count"], p["names"], p["names_per_example"], p["characters_per_example"]]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if histogram:
        lines += ["", f"![IFD of kept and dropped examples]({histogram})"]
    for key, title in (("highest_kept", "Kept examples with the highest IFD"), ("lowest_kept", "Kept examples with the lowest IFD")):
        lines += ["", f"## {title}", "", "| id | IFD | text | answer |", "|---|---|---|---|"]
        for item in report[key]:
            lines.append("| " + " | ".join(_cell(item[k]) for k in ("id", "ifd", "text", "answer")) + " |")
    return "\n".join(lines) + "\n"


def write_curation_report(
    report_dir: PathLike,
    examples: Sequence[InstructionExample],
    ifds: Mapping[str, Optional[float]],
    selection: Selection,
    settings: Mapping[str, object],
) -> None:
    """Write report.json, report.md and ifd_histogram.png for one selection into `report_dir`."""
    from .plots import plot_ifd_histogram

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = curation_report(examples, ifds, selection, settings)
    histogram = plot_ifd_histogram(ifd_series(examples, ifds, selection), out / "ifd_histogram.png")
    report["histogram"] = histogram.name
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    (out / "report.md").write_text(report_markdown(report, histogram.name), encoding="utf8")
