#!/usr/bin/env bash
# `make cli-demo`: a real char-level transformer trained on CPU, driven through twinkle-auto:
# start -> status -> metrics -> pause -> resume (step numbers go on) -> stop (checkpoint saved).
set -euo pipefail
cd "$(dirname "$0")/.."
export TWINKLE_HOME="${TWINKLE_DEMO_HOME:-$PWD/.demo-home}"
export OMP_NUM_THREADS=1
RUN="demo-$(date +%Y%m%d-%H%M%S)"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

echo "twinkle-auto demo: run folders in $TWINKLE_HOME (run id $RUN)"
run twinkle-auto start "$RUN" --script examples/char_transformer/train.py --model-id char-transformer-2L
sleep 6
run twinkle-auto status "$RUN"
run twinkle-auto metrics "$RUN" --keys loss,grad_norm,lr --last 5
run twinkle-auto pause "$RUN"
run twinkle-auto status "$RUN"
run twinkle-auto resume "$RUN"
sleep 5
run twinkle-auto metrics "$RUN" --keys loss,eval_loss --last 5
run twinkle-auto stop "$RUN"
run twinkle-auto logs "$RUN" -n 8
run twinkle-auto runs
echo
echo "Done. Try: TWINKLE_HOME=$TWINKLE_HOME twinkle-auto status $RUN --json"
