#!/usr/bin/env bash
# Everything that needs a GPU, as one run sized for a short lease (about 8 minutes on an H200; never more
# than GPU_CHECK_BUDGET seconds, default 520). Stages run in order of importance, so a lease cut short still
# returns what matters most:
#
#   device imports tests_graph e2e tests_plain capture_failure breakdown chain determinism fx clap cli compile
#
# `gpu_check.sh e2e breakdown` runs only the stages named, in the order given. E2E_MODES (default
# graph,graph-bf16; plain steps were measured before: add eager to redo them) is passed to e2e_speed.py --modes.
#
# Each stage appends its output straight to a file under ${OUT:-.} (setup.log, tests.log, e2e.log,
# breakdown.log, micro.log, cli.log; the end-to-end numbers also go to gpu_e2e.json), so what a stage printed
# survives even if the whole run is killed. Each stage is stopped at its time limit with SIGABRT first, which makes
# Python print every thread's stack (PYTHONFAULTHANDLER) to show where it hung, then SIGKILL. One line per
# stage goes to stdout and ${OUT:-.}/gpu_check.log.
set -u
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ulimit -c 0  # an aborted stage must not leave a core file of several GB
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-520}))
bench=/tmp/t2fx-bench
all=(device imports tests_graph e2e tests_plain capture_failure breakdown chain determinism fx clap cli compile)
wanted=("$@")
((${#wanted[@]})) || wanted=("${all[@]}")
for name in "${wanted[@]}"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "unknown stage '$name'; stages: ${all[*]}" >&2; exit 2; }
done

say() { echo "$(date +%T) $*" | tee -a "$out/gpu_check.log"; }

stage() {  # stage NAME FILE LIMIT_SECONDS COMMAND...
  local name=$1 file=$out/$2 limit=$3 left=$((deadline - SECONDS))
  shift 3
  if ((left < 15)); then
    say "skip $name: out of time"
    return 0
  fi
  ((limit > left)) && limit=$left
  say "start $name (limit ${limit} s)"
  echo "===== $name ($(date +%T))" >>"$file"
  local start=$SECONDS
  timeout -s ABRT -k 10 "$limit" "$@" >>"$file" 2>&1 </dev/null
  local rc=$?
  local how=""
  ((rc == 124 || rc == 134 || rc == 137)) && how=" (time limit or abort)"
  echo "===== end $name: exit $rc$how" >>"$file"
  say "end $name: exit $rc$how after $((SECONDS - start)) s"
}

tests="tests/test_cuda.py tests/test_fast_path.py"
pytest_opts="-q -rs -p no:cacheprovider -o faulthandler_timeout=90"
for name in "${wanted[@]}"; do
  case $name in
  device) stage device setup.log 30 sh -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
    python -c "import sys, torch, numpy; print(sys.version.split()[0], torch.__version__, numpy.__version__,
    torch.cuda.get_device_name())"' ;;
  imports) stage imports setup.log 60 python -c 'import fx, text2fx.engine, text2fx.cli, dasp_pytorch, torchcomp
from text2fx.clap import clap_module; clap_module(); print("imports ok")' ;;
  tests_graph) stage tests_graph tests.log 150 python -m pytest $pytest_opts $tests -k "graph and not capture_failure" ;;
  e2e) stage e2e e2e.log 240 python benchmarks/e2e_speed.py --device cuda --modes "${E2E_MODES:-graph,graph-bf16}" \
    --workdir $bench --json "$out/gpu_e2e.json" ;;
  tests_plain) stage tests_plain tests.log 120 python -m pytest $pytest_opts $tests -k "not graph" ;;
  # Alone: a failed capture must not be able to disturb other tests.
  capture_failure) stage capture_failure tests.log 45 python -m pytest $pytest_opts tests/test_cuda.py -k capture_failure ;;
  breakdown) stage breakdown breakdown.log 120 python benchmarks/step_breakdown.py --profile --workdir $bench ;;
  chain) stage chain micro.log 60 python benchmarks/chain_paths.py --device cuda ;;
  determinism) stage determinism breakdown.log 90 python benchmarks/cuda_determinism.py --workdir $bench ;;
  fx) stage fx micro.log 60 python benchmarks/fx_speed.py --device cuda ;;
  clap) stage clap micro.log 60 python benchmarks/clap_speed.py --device cuda --workdir $bench ;;
  cli) stage cli cli.log 240 python benchmarks/cli_time.py --device cuda --workdir $bench ;;
  # Six compiles (the chain, CLAP in bfloat16 and float32; batch 16, then 1): several minutes.
  compile) stage compile micro.log 360 python benchmarks/compile_probe.py --device cuda --batches 16,1 --clap \
    --precision bfloat16,float32 --workdir $bench ;;
  esac
done
say "done"
