"""What stopping looping answers would change: decode without the stop, then replay each answer
through the stop rule for several numbers of repeated items in a row and compare the parsed mentions.

A row stops once its last `answer_format.LOOP_ITEMS` items each repeat an earlier (entity, name)
pair. This script measures, on instruction JSONL (`prompt` per line), how many answers each
candidate number would stop, how many of those would then yield other mentions, and how many
characters it would save. Engine only: no spaCy.

    python scripts/loop_stop_check.py --adapter spacy_bioselecttune/adapters/smollm2-135m-union \\
        --prompts corpus/ncbi-disease-dev.jsonl:0 corpus/bc5cdr-dev.jsonl:500 --output loop-stop.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spacy_bioselecttune.engine.generate import ArrayCloseTracker, Generator  # noqa: E402
from spacy_bioselecttune.engine.loading import DEFAULT_BASE_MODEL  # noqa: E402
from spacy_bioselecttune.engine.parser import parse_answer  # noqa: E402

NEVER = 1 << 30  # loop_items that no answer reaches: decode without the stop


def stopped(answer: str, loop_items: int) -> Tuple[str, bool]:
    """The part of `answer` a tracker stopping loops of `loop_items` repeats keeps, and whether it stopped a loop."""
    tracker = ArrayCloseTracker(loop_items=loop_items)
    for index, char in enumerate(answer):
        if tracker.feed(char):
            return answer[: index + 1], tracker.looped
    return answer, False


def replay(answers: Sequence[str], labels: Sequence[str], loop_items: int) -> Dict[str, int]:
    """How a stop after `loop_items` repeated items would change these answers."""
    looped = changed = saved = 0
    for answer in answers:
        kept, loops = stopped(answer, loop_items)
        if loops:
            looped += 1
            saved += len(answer) - len(kept)
            changed += parse_answer(kept, labels).mentions != parse_answer(answer, labels).mentions
    return {"loop_items": loop_items, "answers": len(answers), "stopped": looped, "mentions_changed": changed,
            "characters_saved": saved}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", nargs="+", required=True, help="JSONL[:LIMIT] files (LIMIT 0: all lines)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--loop-items", default="2,3,4,5", help="candidate numbers of repeated items in a row")
    args = parser.parse_args(argv)

    generator = Generator(args.base_model, adapter=args.adapter, device=args.device, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, show_progress=True)
    generator.loop_items = NEVER
    results = []
    for spec in args.prompts:
        path, _, limit = spec.partition(":")
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf8").splitlines() if line.strip()]
        rows = rows[: int(limit)] if limit and int(limit) > 0 else rows
        token_ids = generator.generate_token_ids([row["prompt"] for row in rows])
        answers = [generator.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
        labels = sorted({label for row in rows for label in row.get("labels", ())}) or ["Disease", "Chemical", "Gene"]
        lengths = {"longest_answer_tokens": max(map(len, token_ids), default=0),
                   "at_max_new_tokens": sum(len(ids) >= args.max_new_tokens for ids in token_ids)}
        for loop_items in (int(n) for n in args.loop_items.split(",")):
            result = {"prompts": path, **lengths, **replay(answers, labels, loop_items)}
            results.append(result)
            print(json.dumps(result), flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf8")


if __name__ == "__main__":
    main(sys.argv[1:])
