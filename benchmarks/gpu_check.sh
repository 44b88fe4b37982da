#!/usr/bin/env bash
# Everything that needs a GPU, in one run that fits a short lease (~5 min on an H100/H200): the end-to-end
# speed benchmark first (the numbers issue 5 asks for), then the CUDA correctness tests, then the component
# benchmarks. Each part has its own time limit, so one that hangs cannot starve the others.
# Logs go to ${OUT:-.}/gpu_*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu_device.log"
python -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)" 2>&1 | tee -a "$out/gpu_device.log"
timeout 200 python benchmarks/e2e_speed.py --device cuda --full --workdir /tmp/t2fx-bench --json "$out/gpu_e2e.json" 2>&1 | tee "$out/gpu_e2e.log"
# The capture-failure test runs alone: a failed capture must not be able to disturb the other tests.
timeout 150 python -m pytest -q -rs tests/test_cuda.py tests/test_fast_path.py -k "not capture_failure" 2>&1 | tee "$out/gpu_tests.log"
timeout 60 python -m pytest -q -rs tests/test_cuda.py -k capture_failure 2>&1 | tee -a "$out/gpu_tests.log"
timeout 60 python benchmarks/step_breakdown.py --workdir /tmp/t2fx-bench 2>&1 | tee "$out/gpu_breakdown.log"
timeout 45 python benchmarks/fx_speed.py --device cuda 2>&1 | tee "$out/gpu_fx.log"
timeout 45 python benchmarks/clap_speed.py --device cuda --workdir /tmp/t2fx-bench 2>&1 | tee "$out/gpu_clap.log"
