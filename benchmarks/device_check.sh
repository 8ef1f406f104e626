#!/usr/bin/env bash
# The full-size checks for a lent GPU machine (see benchmarks/README.md): the paper-size benchmark in
# bf16 (ViT-L/14 + a 7B Llama config, random weights, the Llama-2 tokenizer) and the small config,
# both modes in one process each. Usage: bash benchmarks/device_check.sh OUT_DIR [TOKENIZER_DIR]
set -euo pipefail
out="${1:?output folder}"
tokenizer="${2:-}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
tok_args=()
[ -n "$tokenizer" ] && tok_args=(--tokenizer "$tokenizer")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m locllm bench --config paper --dtype bfloat16 --device cuda --persons 8 --repeats 3 "${tok_args[@]}" \
  --json "$out/bench_paper_bf16.json"
python3 -m locllm bench --config small --dtype float32 --device cuda --persons 8 --repeats 3 "${tok_args[@]}" \
  --json "$out/bench_small_cuda.json"
