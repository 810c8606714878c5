#!/usr/bin/env bash
# `longllava bench model` on one CUDA GPU: the released 9B shapes (hybrid 1:7 vs pure attention vs
# pure Mamba, random weights, 144 tokens per image) from 1 to 1000 images (hybrid and attention here).
#
#   scripts/bench_gpu.sh [OUT_DIR]        (default OUT_DIR: bench_gpu)
#
# Writes OUT_DIR/results.json (rewritten after every measurement), results.md and bench_model.png.
# Sized for under 5 minutes: no measurement starts after BENCH_BUDGET_S seconds (the rest are
# reported as skipped) and the whole run is stopped at BENCH_TIMEOUT_S. Decode speed uses 100
# tokens instead of the paper's 1000 (set DECODE_TOKENS=1000 when time allows). After each
# variant's rows: decode throughput at the largest batch within MAX_BATCH_GIB (80) at
# CONTEXT_TOKENS (100000) of context, and on the hybrid a packed bf16 LoRA training step over
# TRAINING_TOKENS (16384). bfloat16 weights; the Mamba kernels are the Triton ones of
# core/triton_scan.py (mamba-ssm where installed and selected, LONGLLAVA_MAMBA_KERNELS); decode
# replays a CUDA graph. results.json "kernels" records which scan / conv / step / decode path ran.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench_gpu}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout "${BENCH_TIMEOUT_S:-290}" "$PYTHON" -m longllava bench model \
  --preset longllava-9b --variants hybrid,attention --dtype bfloat16 \
  --images "${IMAGES:-1,8,64,256,1000}" \
  --max-new-tokens "${DECODE_TOKENS:-100}" \
  --unchunked-max-images 8 \
  --time-budget "${BENCH_BUDGET_S:-170}" \
  --max-batch-memory-gib "${MAX_BATCH_GIB:-80}" \
  --context-tokens "${CONTEXT_TOKENS:-100000}" \
  --training-tokens "${TRAINING_TOKENS:-16384}" \
  --out "$OUT"
echo "results: $OUT/results.json"
