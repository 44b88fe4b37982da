#!/usr/bin/env bash
# Everything that needs a GPU, sized for a short lease: `gpu_check.sh plain` (CUDA tests and benchmarks
# without CUDA graphs, about 4 minutes on an H100/H200), then `gpu_check.sh graph` (the CUDA-graph tests and
# measurements, about 3 minutes), or `gpu_check.sh` for both; a run never takes more than GPU_CHECK_BUDGET
# seconds (default 540). Run as two calls where a hang could cost the whole lease: the graph part is the one
# that has never run on a GPU.
#
# Each stage writes its own log straight to a file (no pipe that an orphaned child could hold open), is killed
# at its time limit, and has the tail of its log echoed, so a stage that hangs or crashes costs only itself.
# All logs end up in ${OUT:-.}/gpu_check.log (stage by stage); the end-to-end numbers also in
# ${OUT:-.}/gpu_e2e_{eager,graph}.json.
set -u
cd "$(dirname "$0")/.."
out="${OUT:-.}"
logs=$(mktemp -d)
export PYTHONUNBUFFERED=1
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-540}))

stage() {  # stage NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  shift 2
  if ((left < 15)); then
    echo "$(date +%T) skip $name: out of time"
    return
  fi
  ((limit > left)) && limit=$left
  echo "$(date +%T) start $name (limit ${limit} s)"
  timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  local verdict="$(date +%T) end $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (time limit)')"
  { echo "===== $name"; cat "$logs/$name.log"; echo "$verdict"; } >>"$out/gpu_check.log"
  echo "$verdict"
  tail -n "${GPU_CHECK_TAIL:-25}" "$logs/$name.log"
}

part=${1:-all}
case $part in plain | graph | all) ;; *) echo "usage: $0 [plain|graph|all]" >&2; exit 2 ;; esac
stage device 30 sh -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
  python -c "import sys, torch, numpy; print(sys.version.split()[0], torch.__version__, numpy.__version__)"'
if [[ $part != graph ]]; then
  stage imports 90 python -c 'import fx, text2fx.engine, text2fx.cli, dasp_pytorch, torchcomp, soundfile, jsonschema
from text2fx.clap import clap_module; clap_module(); print("imports ok")'
  stage tests_plain 150 python -m pytest -q -rs tests/test_cuda.py tests/test_fast_path.py -k "not graph"
  stage e2e 150 python benchmarks/e2e_speed.py --device cuda --modes eager --workdir /tmp/t2fx-bench \
    --json "$out/gpu_e2e_eager.json"
  stage fx 60 python benchmarks/fx_speed.py --device cuda
  stage clap 60 python benchmarks/clap_speed.py --device cuda --workdir /tmp/t2fx-bench
fi
if [[ $part != plain ]]; then
  stage tests_graph 120 python -m pytest -q -rs tests/test_cuda.py tests/test_fast_path.py \
    -k "graph and not capture_failure"
  # Alone: a failed capture must not be able to disturb other tests.
  stage capture_failure 45 python -m pytest -q -rs tests/test_cuda.py -k capture_failure
  stage e2e_graph 150 python benchmarks/e2e_speed.py --device cuda --modes graph --workdir /tmp/t2fx-bench \
    --json "$out/gpu_e2e_graph.json"
  stage breakdown 60 python benchmarks/step_breakdown.py --workdir /tmp/t2fx-bench
fi
echo "$(date +%T) done"
