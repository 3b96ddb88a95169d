#!/usr/bin/env bash
# Every GPU test of hla-deploy in one command (docs/GPU.md). Run from anywhere on a machine with
# an NVIDIA GPU, nvcc, cmake, torch with CUDA and triton:
#
#     bash tests/gpu/run_all.sh
#
# 1. finds onnxruntime-gpu: already importable with the CUDAExecutionProvider; or installed in
#    $ORT_GPU_SITE (a `pip install --target` folder); or a wheel in $ORT_GPU_WHEEL,
#    /tmp/onnxruntime_gpu-*.whl, or the parts /root/ortp/ort.whl.part* (../shared/gpu/README.md),
#    installed with `pip install --no-deps --target /tmp/ortsite`. Without one, the CUDA-EP tests
#    skip with the reason and everything else still runs;
# 2. builds the ORT custom-op library WITH its CUDA kernels into $HLA_DEPLOY_BUILD_DIR
#    (default /tmp/hla-build-cuda, outside the work tree) using the ORT headers in
#    $ONNXRUNTIME_INCLUDE_DIR (default: .deps/onnxruntime-1.21/usr/include/onnxruntime);
# 3. runs, each in its own pytest process: every tests/gpu/test_*.py, tests/test_triton_hla.py, tests/test_triton_plan.py,
#    the CUDA cases of tests/test_ort_runtime.py, tests/test_benchmarks_smoke.py, then the
#    parity check with ort-cuda and triton; prints one line of pass/skip/fail counts per step.
# Exit status: 0 when no step failed (skips allowed), 1 otherwise. Logs: $HLA_GPU_LOG_DIR
# (default /tmp/hla-gpu-logs).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-python3}
LOG=${HLA_GPU_LOG_DIR:-/tmp/hla-gpu-logs}
mkdir -p "$LOG"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HLA_DEPLOY_WITH_CUDA=ON
export HLA_DEPLOY_BUILD_DIR=${HLA_DEPLOY_BUILD_DIR:-/tmp/hla-build-cuda}

has_cuda_ep() {
  "$PY" -c 'import onnxruntime as o, sys; sys.exit(0 if "CUDAExecutionProvider" in o.get_available_providers() else 1)' 2>/dev/null
}

# ---- 1. onnxruntime-gpu ------------------------------------------------------------------------
if ! has_cuda_ep && [ -n "${ORT_GPU_SITE:-}" ]; then
  export PYTHONPATH="$ORT_GPU_SITE:$PYTHONPATH"
fi
if ! has_cuda_ep; then
  wheel=${ORT_GPU_WHEEL:-}
  if [ -z "$wheel" ]; then wheel=$(ls /tmp/onnxruntime_gpu-*.whl 2>/dev/null | head -n1); fi
  if [ -z "$wheel" ] && ls /root/ortp/ort.whl.part* >/dev/null 2>&1; then
    wheel=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
    cat /root/ortp/ort.whl.part* > "$wheel"
  fi
  if [ -n "$wheel" ]; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/ortsite "$wheel" \
      && export PYTHONPATH="/tmp/ortsite:$PYTHONPATH"
  fi
fi
if has_cuda_ep; then
  echo "[run_all] onnxruntime-gpu: $("$PY" -c 'import onnxruntime as o; print(o.__version__, o.__file__)')"
else
  echo "[run_all] WARNING: no onnxruntime with the CUDAExecutionProvider: the CUDA-EP tests will skip (docs/GPU.md)"
fi

# ---- 2. the ORT op library with CUDA kernels ------------------------------------------------------
if [ -z "${ONNXRUNTIME_INCLUDE_DIR:-}" ] && [ -f .deps/onnxruntime-1.21/usr/include/onnxruntime/onnxruntime_cxx_api.h ]; then
  export ONNXRUNTIME_INCLUDE_DIR=$ROOT/.deps/onnxruntime-1.21/usr/include/onnxruntime
fi
echo "[run_all] building the ORT op library with CUDA into $HLA_DEPLOY_BUILD_DIR"
if ! "$PY" -m hla_deploy build-plugins --with-cuda on --no-runner --quiet > "$LOG/build.log" 2>&1; then
  echo "[run_all] build FAILED (see $LOG/build.log):"; tail -n 20 "$LOG/build.log"
  BUILD_FAILED=1
else
  BUILD_FAILED=0
  tail -n 1 "$LOG/build.log"
fi

# ---- 3. the tests -------------------------------------------------------------------------------
FAILED=0
SUMMARY=()
run_step() {  # name, command...
  local name=$1; shift
  local log="$LOG/$name.log"
  echo "[run_all] $name: $*"
  "$@" > "$log" 2>&1
  local rc=$?
  local counts
  counts=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|deselected)' "$log" | tail -n 1 | sed 's/=//g')
  [ -z "$counts" ] && counts=$(grep -E '^(PASS|FAIL)' "$log" | tail -n 1)
  [ $rc -eq 5 ] && grep -qE '^[0-9]+ skipped' "$log" && rc=0  # pytest: everything skipped (reason below)
  if [ $rc -ne 0 ]; then FAILED=1; SUMMARY+=("FAIL  $name: rc=$rc $counts  [$log]")
  else SUMMARY+=("ok    $name: $counts"); fi
}
for f in tests/gpu/test_*.py; do
  run_step "$(basename "$f" .py)" "$PY" -m pytest -q -rs -p no:cacheprovider "$f"
done
run_step test_triton_hla "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_triton_hla.py
run_step test_triton_plan "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_triton_plan.py
run_step test_ort_runtime_cuda "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_ort_runtime.py -k cuda
run_step test_benchmarks_smoke "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_benchmarks_smoke.py
run_step parity_cuda "$PY" -m hla_deploy parity hla_deploy/checkpoints/tiny-pystdlib \
  --backends torch,triton,ort-cpu,ort-cuda,onnx-standard --decode-steps 32 --json "$LOG/parity.json"

echo
echo "[run_all] summary (logs in $LOG):"
printf '  %s\n' "${SUMMARY[@]}"
grep -h '^SKIPPED' "$LOG"/*.log 2>/dev/null | sort | uniq -c | sed 's/^/  /' | head -n 40
if [ $FAILED -ne 0 ] || [ $BUILD_FAILED -ne 0 ]; then exit 1; fi
exit 0
