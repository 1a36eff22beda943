#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): BLUR vs GradDiff step time and peak memory at ~1B
# parameters in bf16 (local, ZeRO-2, ZeRO-3 on one GPU), the combiner alone vs a reference-style
# per-parameter loop, batched vs one-at-a-time evaluation. No downloads; <= 8 minutes on one
# H100/H200. Needs an environment with the project installed (pip install -c
# requirements/lock.txt -e ".[deepspeed]"; a CUDA build of torch). Writes
# benchmarks/results/gpu_check.md (or --out PATH) and benchmarks/results/lora_gpu.md (LoRA vs full).
# CPU smoke test: --size tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python benchmarks/gpu_check.py "$@"
# LoRA vs full fine-tuning at ~1B (benchmarks/lora_bench.py): trainable parameters, peak memory,
# step time, BLUR vs GradDiff; skipped for the CPU smoke test
case " $* " in
    *" tiny "*|*"--size=tiny"*) ;;
    *) python benchmarks/lora_bench.py --models random --random-llama 2048x16x8192 --random-steps 8 \
           --rounds 1 --dtype bfloat16 --out benchmarks/results/lora_gpu.md ;;
esac
