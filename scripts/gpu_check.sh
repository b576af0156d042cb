#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, build for its architecture, run the
# whole test suite (CUDA tests included), compute-sanitizer (memcheck,
# racecheck, synccheck) over scripts/sanitizer_driver.py, and the benchmarks
# (loss and metrics).
# Installs nothing from the network (the lent GPU machines have none); wheels
# carried in .whl/ (scripts/fetch_gpu_wheels.sh) are installed. Logs and results
# go to $OUT when set, else to benchmarks/results/. A summary is printed last.
#
#   scripts/gpu_check.sh [STAGE ...]
#   stages: build calibrate strategies tests sanitize bench bench-metrics profile (default: all but profile)
#   calibrate: every workload of the GPU cost model (benchmarks/results/gpu_model_*.json)
#   measured beside its prediction, with Nsight Compute's DRAM bytes, sectors and bank
#   conflicts for the reference workloads when ncu is there (scripts/gpu_calibrate.py,
#   about 2 minutes: gpu_calibration.md / .json).
#   strategies: the two CUDA forward strategies (FASTDICE_CUDA_FORWARD=warp|thread)
#   timed side by side on the reference workloads (benchmarks/bench.py STRATEGY_WORKLOADS).
#
# On the lent machines one command may run 10 minutes at most, and a session
# has about 15 minutes of device time in all (machine start included): run
# "build calibrate strategies tests bench" first (the benchmark saves its JSON / Markdown after
# every workload, so a run stopped at the limit keeps what it measured), then
# "build sanitize bench-metrics" (the build is incremental: seconds when
# repeated on the same warm machine). The copied tree has no .git: pass the
# commit as FASTDICE_COMMIT=<hash> for the results' metadata.
set -uo pipefail
STAGES="${*:-build calibrate strategies tests sanitize bench bench-metrics}"
want() { [[ " $STAGES " == *" $1 "* ]]; }
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

# Peers carried as wheels (scripts/fetch_gpu_wheels.sh; carry ".whl"): the
# compat tests use them as oracles and the benchmark as providers.
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

ARCH=$($PY -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')") || { echo "no CUDA device"; exit 1; }
export TORCH_CUDA_ARCH_LIST="$ARCH"
$PY - <<'PY' | tee "$OUT_DIR/gpu_env.txt"
import torch, subprocess
print("device:", torch.cuda.get_device_name(), "capability:", torch.cuda.get_device_capability())
print("torch:", torch.__version__, "cuda:", torch.version.cuda)
PY

if want build; then
  step build "$OUT_DIR/gpu_build.log" $PY setup.py build_ext --inplace || { printf '%s\n' "${summary[@]}"; exit 1; }
  # Registers and spills per kernel (nvcc --resource-usage), at the end of the build log.
  $PY scripts/kernel_resources.py "$OUT_DIR/gpu_build.log" > /tmp/fastdice_resources.txt
  { echo "=== kernel resources"; cat /tmp/fastdice_resources.txt; } >> "$OUT_DIR/gpu_build.log"
  summary+=("$(tail -n 1 /tmp/fastdice_resources.txt)")
fi
if want calibrate; then
  NCU_FLAG=(); command -v ncu >/dev/null && NCU_FLAG=(--ncu)
  step calibrate "$OUT_DIR/gpu_calibrate.log" timeout 300 $PY scripts/gpu_calibrate.py --out "$OUT_DIR" "${NCU_FLAG[@]}"
fi
if want strategies; then
  step strategies "$OUT_DIR/gpu_strategies.log" $PY -m benchmarks.bench --device cuda --providers fastdice fastdice_thread \
    --workloads strategies --out /tmp/fastdice_strategies  # its table ends the log (at most 8 files come back)
fi
if want tests; then
  # pytest-xdist where installed (the lent machines have it and 16 cores).
  XDIST=(); $PY -c "import xdist" 2>/dev/null && XDIST=(-n 8)
  step tests "$OUT_DIR/gpu_tests.log" $PY -m pytest tests -q -rs -p no:cacheprovider "${XDIST[@]}"
fi
if want sanitize; then
  for tool in memcheck racecheck synccheck; do
    # No caching allocator: memcheck then sees every allocation's own bounds.
    step "sanitizer-$tool" "$OUT_DIR/gpu_sanitizer_$tool.tmp" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      compute-sanitizer --tool "$tool" --error-exitcode 9 $PY scripts/sanitizer_driver.py
    # One file for the three tools: at most 8 files come back from a lent machine.
    { echo "=== compute-sanitizer --tool $tool"; cat "$OUT_DIR/gpu_sanitizer_$tool.tmp"; } >>"$OUT_DIR/gpu_sanitizer.log"
    rm -f "$OUT_DIR/gpu_sanitizer_$tool.tmp"
  done
fi
if want bench; then
  step bench "$OUT_DIR/gpu_bench.log" $PY -m benchmarks.bench --device cuda --out "$OUT_DIR"
fi
if want bench-metrics; then
  step bench-metrics "$OUT_DIR/gpu_bench_metrics.log" $PY -m benchmarks.bench_metrics --device cuda --out "$OUT_DIR"
fi
if want profile; then
  # Hardware counters of the statistics kernels (Firecracker machines; on gVisor ncu cannot read them).
  step profile "$OUT_DIR/gpu_profile.log" ncu --clock-control none --kernel-name regex:dice_stats --launch-count 32 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section LaunchStats --section WarpStateStats $PY scripts/profile_driver.py
fi

echo
echo "== gpu_check summary ($(cat "$OUT_DIR/gpu_env.txt" | head -n 1))"
printf '%s\n' "${summary[@]}"
[ -f "$OUT_DIR/gpu_calibration.md" ] && grep -E "^\| " "$OUT_DIR/gpu_calibration.md" | head -n 40
[ -f "$OUT_DIR/gpu_strategies.log" ] && grep -E "^\| " "$OUT_DIR/gpu_strategies.log" | head -n 20
[ -f "$OUT_DIR/gpu_bench.log" ] && grep -E "^\| " "$OUT_DIR/gpu_bench.log" | head -n 60
[ -f "$OUT_DIR/gpu_bench_metrics.log" ] && grep -E "^\| " "$OUT_DIR/gpu_bench_metrics.log" | head -n 30
