#!/usr/bin/env bash
# The one-GPU figures of the README, most important first; each step writes its results as it ends.
#
#   bash scripts/gpu_figures.sh OUT [DEADLINE_SECONDS]
#
# Needs the instruction JSONL of convert-dataset (ncbi-disease, bc5cdr, bc2gm) and of the full mix
# (`mix corpus/union-full-train.jsonl ... --limit 0`, `mix corpus/union-full-dev.jsonl ... --limit 100`)
# in corpus/, and the engine's packages only (torch, transformers, peft, typer): no spaCy.
#   1. IFD scoring speed on the NCBI-disease training set (`score`);
#   2. the union adapter: configs/train_gpu.cfg over every training sentence of the three corpora,
#      tested on each corpus's test split;
#   3. generation speed: the naive loop against the optimised engine and its ablations (`bench`);
#   4. full data vs hybrid 50% vs random 50% per corpus, on the test splits.
# DEADLINE_SECONDS stops whatever runs then and skips the rest (grid rows finished so far are kept);
# the union adapter's training stops early enough (max_minutes) to leave 4 minutes for its tests.
# Smoke-test settings: TRAIN_LIMIT, EVAL_LIMIT, BENCH_LIMIT, SCORE_BATCH, SCORE_BATCHES, EXTRA_SETTINGS (e.g. "--set max_steps=2").
set -uo pipefail
OUT=${1:?usage: gpu_figures.sh OUT [DEADLINE_SECONDS]}
DEADLINE=$(( $(date +%s) + ${2:-100000} ))
PYTHON=${PYTHON:-python3}
TRAIN_LIMIT=${TRAIN_LIMIT:-0}
EVAL_LIMIT=${EVAL_LIMIT:-0}
BENCH_LIMIT=${BENCH_LIMIT:-512}
SCORE_BATCH=${SCORE_BATCH:-1024}
read -r -a EXTRA <<< "${EXTRA_SETTINGS:-}"
SCORE_LIMIT=()
[[ -n "${SCORE_BATCHES:-}" ]] && SCORE_LIMIT=(--max-batches "$SCORE_BATCHES")
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

step() { echo "== $1 ($(date -u +%T))"; }
until_deadline() {
    local left=$(( DEADLINE - $(date +%s) ))
    if (( left < 10 )); then echo "skipped: ${left}s left before the deadline"; return 1; fi
    timeout "$left" "$@"
}
experiments() {
    until_deadline "$PYTHON" scripts/run_experiments.py --config configs/train_gpu.cfg --split test --score-batch-size "$SCORE_BATCH" \
        --generate-batch-size 256 --train-limit "$TRAIN_LIMIT" --eval-limit "$EVAL_LIMIT" "${EXTRA[@]}" "$@"
}

step "1. IFD scoring speed, NCBI-disease train"
until_deadline "$PYTHON" -m spacy_bioselecttune score corpus/ncbi-disease-train.jsonl "$OUT/score/ncbi-disease-train.scores.jsonl" \
    --batch-size "$SCORE_BATCH" "${SCORE_LIMIT[@]}" 2>&1 | tee "$OUT/score.log"

step "2. Union adapter"
union_minutes=$(awk -v left=$(( DEADLINE - $(date +%s) - 240 )) 'BEGIN { printf "%.2f", (left > 60 ? left : 60) / 60 }')
experiments --output "$OUT/union" --datasets union-full --strategies full --dev-loss --set max_minutes="$union_minutes" \
    --eval-datasets ncbi-disease,bc5cdr,bc2gm 2>&1 | tee "$OUT/union.log"

step "3. Generation speed"
until_deadline "$PYTHON" -m spacy_bioselecttune bench corpus/ncbi-disease-test.jsonl "$OUT/bench" \
    --adapter "$OUT/union/union-full/adapter-full" --labels Disease --limit "$BENCH_LIMIT" --batch-size 256 \
    --max-new-tokens 128 --variants static,continuous,no-prefix-cache,unmerged 2>&1 | tee "$OUT/bench.log"

step "4. Strategy grid"
experiments --output "$OUT/grid" --datasets ncbi-disease,bc5cdr,bc2gm --strategies full,hybrid,random 2>&1 | tee "$OUT/grid.log"
step "done"
