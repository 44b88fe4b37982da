#!/usr/bin/env bash
# Everything that needs a GPU, in one run that fits a short lease (~10 min on an H100/H200):
# CUDA correctness tests, then the speed benchmarks on cuda. Logs go to ${OUT:-.}/gpu_*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu_device.log"
python -m pytest -q tests/test_cuda.py tests/test_fast_path.py 2>&1 | tee "$out/gpu_tests.log"
python benchmarks/e2e_speed.py --device cuda --full --workdir /tmp/t2fx-bench --json "$out/gpu_e2e.json" 2>&1 | tee "$out/gpu_e2e.log"
python benchmarks/fx_speed.py --device cuda 2>&1 | tee "$out/gpu_fx.log"
python benchmarks/clap_speed.py --device cuda --workdir /tmp/t2fx-bench 2>&1 | tee "$out/gpu_clap.log"
