"""`curate`: select a training subset from IFD scores and write it with a report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import typer

from ..engine.ifd import (
    METRICS,
    STRATEGIES,
    Selection,
    read_instruction_jsonl,
    read_scores,
    select_subset,
    write_curation_report,
)
from ..errors import Errors, Warnings, warn
from . import Arg, Opt, app


CURATE_DEFAULTS = {"strategy": "hybrid", "ratio": 0.5, "negatives_ratio": 1.0, "seed": 0, "metric": "loss_ratio"}


@app.command("curate")
def curate_cli(
    input_path: Path = Arg(..., help="Instruction JSONL", exists=True, dir_okay=False),
    scores_path: Path = Arg(..., help="Scores JSONL written by `score`", exists=True, dir_okay=False),
    output_path: Path = Arg(..., help="Curated instruction JSONL to write", dir_okay=False),
    strategy: Optional[str] = Opt(None, "--strategy", "-s", help=f"One of {', '.join(STRATEGIES)} (default: hybrid)"),
    ratio: Optional[float] = Opt(None, "--ratio", "-r", help="Share of eligible positives (ifd: of all) to keep (default: 0.5)"),
    negatives_ratio: Optional[float] = Opt(None, "--negatives-ratio", help="Share of negatives to keep (default: 1.0)"),
    seed: Optional[int] = Opt(None, "--seed", help="Seed for sampling negatives and the random control (default: 0)"),
    metric: Optional[str] = Opt(None, "--metric", help=f"IFD metric: {' or '.join(METRICS)} (default: loss_ratio)"),
    report_dir: Optional[Path] = Opt(None, "--report-dir", help="Where report.json, report.md and the PNG go"),
    config_path: Optional[Path] = Opt(None, "--config", "-c", help="Settings file with a curate section", exists=True, dir_okay=False),
) -> None:
    """Keep the most informative positives by IFD (Hybrid Superfiltering), or a control subset.

    Options given here win over the config file, which wins over the defaults.
    """
    given = {"strategy": strategy, "ratio": ratio, "negatives_ratio": negatives_ratio, "seed": seed, "metric": metric}
    settings = config_settings(config_path, "curate", given, CURATE_DEFAULTS)
    selection = curate(input_path, scores_path, output_path, report_dir=report_dir, **settings)
    counts = selection.counts
    typer.echo(
        f"Kept {len(selection.kept_ids)} example(s): {counts['positive'].kept} of {counts['positive'].total} "
        f"positives, {counts['negative'].kept} of {counts['negative'].total} negatives -> {output_path}"
    )


def config_settings(
    config_path: Optional[Path], section: str, given: Dict[str, Any], defaults: Dict[str, Any]
) -> Dict[str, Any]:
    """Settings from the command line (not None), else the config file's `section`, else `defaults`."""
    from_file: Dict[str, Any] = {}
    if config_path is not None:
        from thinc.api import Config  # only with a config file: `score` and `curate` run without thinc

        from_file = Config().from_disk(config_path).get(section, {})
    unknown = sorted(set(from_file) - set(defaults))
    if unknown:
        raise ValueError(Errors.E408.format(keys=unknown, source=f"{config_path} [{section}]", known=sorted(defaults)))
    return {key: given[key] if given.get(key) is not None else from_file.get(key, value) for key, value in defaults.items()}


def curate(
    input_path: Path,
    scores_path: Path,
    output_path: Path,
    strategy: str = "hybrid",
    ratio: float = 0.5,
    negatives_ratio: float = 1.0,
    seed: int = 0,
    metric: str = "loss_ratio",
    report_dir: Optional[Path] = None,
) -> Selection:
    """Write the examples `strategy` keeps (in input order); with `report_dir`, also the report."""
    examples = read_instruction_jsonl(input_path)
    scores = read_scores(scores_path, metric)
    missing = [example.id for example in examples if example.id not in scores]
    if missing:
        raise ValueError(Errors.E403.format(count=len(missing), input=input_path, scores=scores_path, example=missing[0]))
    known = {example.id for example in examples}
    extra = [score_id for score_id in scores if score_id not in known]
    if extra:
        warn(Warnings.W402.format(count=len(extra), scores=scores_path, input=input_path, example=extra[0]))
    ifds = {example.id: scores[example.id].ifd for example in examples}
    selection = select_subset(strategy, examples, ifds, ratio, negatives_ratio, seed)
    kept = set(selection.kept_ids)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w", encoding="utf8") as out:
        for example in examples:
            if example.id in kept:
                out.write(example.line + "\n")
    if report_dir is not None:
        settings = {"input": str(input_path), "scores": str(scores_path), "strategy": strategy, "ratio": ratio,
                    "negatives_ratio": negatives_ratio, "seed": seed, "metric": metric}
        write_curation_report(report_dir, examples, ifds, selection, settings)
    return selection
