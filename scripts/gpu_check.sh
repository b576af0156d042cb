#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, build for its architecture, run the
# whole test suite (CUDA tests included), compute-sanitizer (memcheck,
# racecheck, synccheck) over scripts/sanitizer_driver.py, and the benchmarks
# (loss and metrics).
# Installs nothing (the lent GPU machines have no network). Logs and results
# go to $OUT when set, else to benchmarks/results/. A summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
export FASTDICE_CUDA=1 PYTHONUNBUFFERED=1
summary=()
step() {  # step NAME LOGFILE COMMAND...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$log" | cut -c1-110)")")
  return $rc
}

ARCH=$($PY -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')") || { echo "no CUDA device"; exit 1; }
export TORCH_CUDA_ARCH_LIST="$ARCH"
$PY - <<'PY' | tee "$OUT_DIR/gpu_env.txt"
import torch, subprocess
print("device:", torch.cuda.get_device_name(), "capability:", torch.cuda.get_device_capability())
print("torch:", torch.__version__, "cuda:", torch.version.cuda)
PY

step build "$OUT_DIR/gpu_build.log" $PY setup.py build_ext --inplace || { printf '%s\n' "${summary[@]}"; exit 1; }
step tests "$OUT_DIR/gpu_tests.log" $PY -m pytest tests -q -rs -p no:cacheprovider
export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # let memcheck see every allocation's bounds
for tool in memcheck racecheck synccheck; do
  step "sanitizer-$tool" "$OUT_DIR/gpu_sanitizer_$tool.log" \
    compute-sanitizer --tool "$tool" --error-exitcode 9 $PY scripts/sanitizer_driver.py
done
unset PYTORCH_NO_CUDA_MEMORY_CACHING
step bench "$OUT_DIR/gpu_bench.log" $PY -m benchmarks.bench --device cuda --out "$OUT_DIR"
step bench-metrics "$OUT_DIR/gpu_bench_metrics.log" $PY -m benchmarks.bench_metrics --device cuda --out "$OUT_DIR"

echo
echo "== gpu_check summary ($(cat "$OUT_DIR/gpu_env.txt" | head -n 1))"
printf '%s\n' "${summary[@]}"
grep -E "^\| " "$OUT_DIR/gpu_bench.log" | head -n 60
grep -E "^\| " "$OUT_DIR/gpu_bench_metrics.log" | head -n 30
