#!/usr/bin/env bash
# Every GPU test of hla-deploy in one command (docs/GPU.md), on a fresh copy of the checkout on a
# machine with an NVIDIA GPU, nvcc, cmake, torch with CUDA, triton, pytest (+ pytest-xdist), no network:
#
#     bash tests/gpu/run_all.sh [--dry-run] [--steps NAME,...] [--tar FILE.tgz]
#
#   --dry-run    print the plan (every step, its command, its time limit) and collect each pytest
#                step's tests (pytest --collect-only), run nothing else; also HLA_GPU_DRY=1
#   --steps      run only these steps (names as printed by --dry-run; install, onnxruntime-gpu and
#                the builds always run), e.g. --steps triton or --steps gpu_test_ort_cuda_ep,parity_cuda;
#                two steps run ONLY when named here: diagnose_ort_cuda, diagnose_triton (docs/GPU.md)
#   --tar FILE   write the log folder into FILE (a .tgz: one file to bring back from the device)
#
# Phase 0, in order (each timed): env (versions, GPU), install (`pip install --no-deps
# --no-build-isolation --no-index -e .`: hla_deploy.exporters exists only as installed; stops with
# a clear message when the install fails or imports another copy), onnxruntime-gpu (already
# importable with the CUDA EP; $ORT_GPU_SITE; $ORT_GPU_WHEEL, /tmp/onnxruntime_gpu-*.whl or the
# parts /root/ortp/ort.whl.part* (../shared/gpu/README.md), checked against /root/ortp/sha,
# installed into /tmp/ortsite), then three builds side by side: the ORT op library WITH its CUDA
# kernels into $HLA_DEPLOY_BUILD_DIR, the CUDA ctypes library of plugins/common (handed to
# the tests as $HLA_CAPI_LIB, so no test process runs CMake) and test_aot_prefill's AOT cubins
# (into $HLA_GPU_AOT_KERNEL_DIR, default /tmp/hla-aot-test-kernels).
# Phase 1, all steps at once (16 cores, 1 GPU; each step its own processes, pytest-xdist inside):
# every tests/gpu/test_*.py, tests/test_triton_hla.py (-n 8 --dist loadscope: one class per
# worker, so each Triton specialisation compiles once; counted by tests/triton_spec_count.py),
# tests/test_triton_plan.py (-n 3),
# the CUDA case of tests/test_ort_runtime.py, tests/test_benchmarks_smoke.py, and the parity
# check with ort-cuda and triton (under tests/gpu/proc_probe.py: a signal or a native exit is
# named). One Triton cache for the whole run: $TRITON_CACHE_DIR (default /tmp/hla-triton-cache,
# kept between calls while the machine stays warm). Every step has a time limit so that the run
# ends, with its summary, inside $HLA_GPU_BUDGET_S (default 560 s: one 600 s device call).
#
# Then tests/gpu/summarize_run.py prints one line per step (ok/FAIL, seconds, counts), every skip
# with its reason, and writes summary.json. On a GPU machine a step FAILS when anything was
# skipped for a reason other than TensorRT (HLA_GPU_ALLOWED_SKIPS, a regex, changes that).
# Exit status: 0 all steps ok, 1 a step failed, 2 set-up impossible (install). Logs:
# $HLA_GPU_LOG_DIR (default /tmp/hla-gpu-logs).
set -u

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
DRY=${HLA_GPU_DRY:-0}
ONLY=""
TAR=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --steps) ONLY=${2:-}; shift ;;
    --tar) TAR=${2:-}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd -P)
PY=${PYTHON:-python3}
LOG=${HLA_GPU_LOG_DIR:-/tmp/hla-gpu-logs}
BUDGET=${HLA_GPU_BUDGET_S:-560}
T0=$(date +%s)
mkdir -p "$LOG" || { echo "[run_all] cannot create the log folder $LOG" >&2; exit 2; }
rm -f "$LOG"/*.step "$LOG"/*.log "$LOG"/*.json

export HLA_DEPLOY_WITH_CUDA=ON
export HLA_DEPLOY_BUILD_DIR=${HLA_DEPLOY_BUILD_DIR:-/tmp/hla-build-cuda}
export HLA_DEPLOY_CACHE=${HLA_DEPLOY_CACHE:-/tmp/hla-cache}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/hla-triton-cache}
export PYTHONUNBUFFERED=1
export PYTHONFAULTHANDLER=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}   # many processes share 16 cores: no thread oversubscription
mkdir -p "$TRITON_CACHE_DIR"

ORDER=0
elapsed() { echo $(( $(date +%s) - T0 )); }
wanted() { [ -z "$ONLY" ] && return 0; case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
say() { echo "[run_all $(printf '%4d' "$(elapsed)")s] $*"; }

record() {  # order name kind rc seconds log [key=value...]
  local order=$1 name=$2 kind=$3 rc=$4 secs=$5 log=$6; shift 6
  { echo "order=$order"; echo "name=$name"; echo "kind=$kind"; echo "rc=$rc"; echo "seconds=$secs"
    echo "log=$log"; for kv in "$@"; do echo "$kv"; done; } > "$LOG/$name.step"
}

run_step() {  # order name kind limit_s [key=value...] -- command...
  local order=$1 name=$2 kind=$3 limit=$4; shift 4
  local extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1"); shift; done
  shift
  local log="$LOG/$name.log" start end rc
  start=$(date +%s.%N)
  timeout -k 15 "$limit" "$@" > "$log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  record "$order" "$name" "$kind" "$rc" "$secs" "$log" "${extra[@]+"${extra[@]}"}"
  say "done  $name: status $rc in ${secs} s"
}

# ---- phase 0: environment, install, onnxruntime-gpu, builds ----------------------------------------
ORDER=$((ORDER + 1))
run_step "$ORDER" env cmd 60 -- bash -c "
  echo \"python: \$($PY -c 'import sys; print(sys.version.split()[0], sys.executable)')\"
  $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"gpu\", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
  $PY -c 'import triton; print(\"triton\", triton.__version__)'
  $PY -c 'import xdist; print(\"pytest-xdist\", xdist.__version__)' || echo 'pytest-xdist: not importable'
  (command -v nvcc >/dev/null && nvcc --version | tail -n 2) || echo 'nvcc: not on PATH'
  (command -v nvidia-smi >/dev/null && nvidia-smi -L) || echo 'nvidia-smi: not on PATH'
  echo \"cores: \$(nproc)\"; echo \"TRITON_CACHE_DIR=$TRITON_CACHE_DIR (\$(find $TRITON_CACHE_DIR -name '*.json' 2>/dev/null | wc -l) cached entries)\""
cat "$LOG/env.log"
GPU=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
XDIST=1
"$PY" -c 'import xdist' 2>/dev/null || XDIST=0
[ "$XDIST" = 1 ] || say "WARNING: pytest-xdist is not importable: every pytest step runs in one process (slower)"
nx() { if [ "$XDIST" = 1 ]; then echo "-n $1"; fi; }  # pytest-xdist workers (none without xdist)

if [ "$DRY" = 1 ]; then
  say "dry run: would install the checkout (pip install --no-deps --no-build-isolation --no-index -e .), find onnxruntime-gpu and build into $HLA_DEPLOY_BUILD_DIR"
else
  ORDER=$((ORDER + 1))
  run_step "$ORDER" install cmd 180 -- bash -c "
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . && exit 0
    echo '[run_all] retrying with --break-system-packages (an externally managed Python)'
    $PY -m pip install -q --no-deps --no-build-isolation --no-index --break-system-packages -e ."
  where=$(cd /tmp && "$PY" -c 'import hla_deploy, hla_deploy.exporters, os; print(os.path.dirname(os.path.realpath(hla_deploy.__file__)))' 2>>"$LOG/install.log")
  if [ "$where" != "$ROOT/hla_deploy" ]; then
    say "STOP: this checkout is not importable as installed (hla_deploy.exporters needs the install's package-dir mapping)."
    say "      'pip install --no-deps --no-build-isolation --no-index -e .' in $ROOT failed, or 'import hla_deploy' outside it found '${where:-nothing}' instead of $ROOT/hla_deploy. Log: $LOG/install.log"
    tail -n 15 "$LOG/install.log"
    exit 2
  fi
  say "install: hla_deploy imports from $where (with hla_deploy.exporters)"
fi

has_cuda_ep() {
  "$PY" -c 'import onnxruntime as o, sys; sys.exit(0 if "CUDAExecutionProvider" in o.get_available_providers() else 1)' 2>/dev/null
}
ORDER=$((ORDER + 1)); ORT_ORDER=$ORDER; ORT_START=$(date +%s)
{
  if ! has_cuda_ep && [ -n "${ORT_GPU_SITE:-}" ]; then export PYTHONPATH="$ORT_GPU_SITE${PYTHONPATH:+:$PYTHONPATH}"; fi
  if ! has_cuda_ep && [ -d /tmp/ortsite/onnxruntime ]; then  # installed by an earlier call on this machine
    export PYTHONPATH="/tmp/ortsite${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! has_cuda_ep && [ "$DRY" != 1 ]; then
    wheel=${ORT_GPU_WHEEL:-}
    if [ -z "$wheel" ]; then wheel=$(find /tmp -maxdepth 1 -name 'onnxruntime_gpu-*.whl' 2>/dev/null | head -n 1); fi
    if [ -z "$wheel" ] && compgen -G '/root/ortp/ort.whl.part*' >/dev/null; then
      wheel=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
      cat /root/ortp/ort.whl.part* > "$wheel"
      if [ -f /root/ortp/sha ] && [ "$(sha256sum "$wheel" | cut -c1-64)" != "$(cut -c1-64 /root/ortp/sha)" ]; then
        echo "[run_all] the parts in /root/ortp/ do not make the wheel whose sha256 /root/ortp/sha names (a part missing or stale): not installed"
        rm -f "$wheel"; wheel=""
      fi
    fi
    if [ -n "$wheel" ]; then
      echo "[run_all] installing $wheel into /tmp/ortsite"
      "$PY" -m pip install -q --no-index --no-deps --target /tmp/ortsite "$wheel" \
        && export PYTHONPATH="/tmp/ortsite${PYTHONPATH:+:$PYTHONPATH}"
    fi
  fi
} > "$LOG/onnxruntime_gpu.log" 2>&1
if has_cuda_ep; then
  ORT_RC=0
  echo "onnxruntime-gpu: $("$PY" -c 'import onnxruntime as o; print(o.__version__, o.__file__)' 2>/dev/null)" >> "$LOG/onnxruntime_gpu.log"
else
  # a GPU machine without the CUDA EP fails this step when a step that needs it runs
  ORT_RC=0
  for n in gpu_test_ort_cuda_ep ort_runtime_cuda parity_cuda; do wanted "$n" && ORT_RC=$GPU; done
  case ",$ONLY," in *,diagnose_ort_cuda,*) ORT_RC=$GPU ;; esac
  echo "no onnxruntime with the CUDAExecutionProvider: the CUDA-EP tests will skip (docs/GPU.md)" >> "$LOG/onnxruntime_gpu.log"
fi
record "$ORT_ORDER" onnxruntime_gpu cmd "$ORT_RC" "$(( $(date +%s) - ORT_START ))" "$LOG/onnxruntime_gpu.log"
say "$(tail -n 1 "$LOG/onnxruntime_gpu.log")"

if [ -z "${ONNXRUNTIME_INCLUDE_DIR:-}" ] && [ -f .deps/onnxruntime-1.21/usr/include/onnxruntime/onnxruntime_cxx_api.h ]; then
  export ONNXRUNTIME_INCLUDE_DIR=$ROOT/.deps/onnxruntime-1.21/usr/include/onnxruntime
fi
AOT_KERNEL_DIR=${HLA_GPU_AOT_KERNEL_DIR:-/tmp/hla-aot-test-kernels}  # test_aot_prefill's cubins (phase 0)
CAPI_BUILD="import importlib.util as u; s = u.spec_from_file_location('hla_capi', 'plugins/common/hla_capi.py'); m = u.module_from_spec(s); s.loader.exec_module(m); print(m.build(cuda=True, jobs=8))"
if [ "$DRY" = 1 ]; then
  say "dry run: would build: $PY -m hla_deploy build-plugins --with-cuda on --no-runner; the CUDA capi: $PY -c \"$CAPI_BUILD\"; and test_aot_prefill's AOT cubins: tests/gpu/test_aot_prefill.py's build_kernel_dir($AOT_KERNEL_DIR)"
else
  say "building the ORT op library (CUDA) into $HLA_DEPLOY_BUILD_DIR and the CUDA capi library, side by side"
  run_step "$((ORDER + 1))" build_ort_op cmd 300 -- "$PY" -m hla_deploy build-plugins --with-cuda on --no-runner &
  run_step "$((ORDER + 2))" build_capi_cuda cmd 300 -- "$PY" -c "$CAPI_BUILD" &
  if wanted gpu_test_aot_prefill; then  # its cubins once, here, so that its tests can run on xdist workers
    run_step "$((ORDER + 3))" build_aot_kernels cmd 300 -- "$PY" -c "import sys; sys.path[:0] = ['tests/gpu', 'tests']; import test_aot_prefill as t; print(t.build_kernel_dir(sys.argv[1]))" "$AOT_KERNEL_DIR" &
  fi
  ORDER=$((ORDER + 3))
  wait
  capi=$(tail -n 1 "$LOG/build_capi_cuda.log")
  if [ -f "$capi" ]; then export HLA_CAPI_LIB=$capi; else say "the CUDA capi build failed: the capi tests build it themselves (or fail)"; fi
fi

# ---- phase 1: the test steps, concurrently ---------------------------------------------------------
LIMIT=$(( BUDGET - $(elapsed) - 20 ))
[ "$LIMIT" -lt 60 ] && LIMIT=60
PYT=("$PY" -m pytest -q -rs -p no:cacheprovider)
declare -a NAMES=()

pytest_step() {  # name "VAR=value ..." "xdist args" pytest-args...
  local name=$1 envs=$2 xd=$3; shift 3
  wanted "$name" || return 0
  ORDER=$((ORDER + 1)); NAMES+=("$name")
  # shellcheck disable=SC2086  # $envs and $xd are zero or more words on purpose
  if [ "$DRY" = 1 ]; then
    say "step $name (limit ${LIMIT} s): ${envs:+$envs }${PYT[*]} $xd $*"
    env $envs "${PYT[@]}" --collect-only "$@" 2>&1 | tail -n 1 | sed 's/^/           collect: /'
    return 0
  fi
  say "start $name: ${envs:+$envs }${PYT[*]} $xd $*"
  # shellcheck disable=SC2086
  run_step "$ORDER" "$name" pytest "$LIMIT" -- env $envs "${PYT[@]}" $xd "$@" &
}

for f in tests/gpu/test_*.py; do
  case $(basename "$f") in
    test_ort_cuda_ep.py) xd=$(nx "${HLA_GPU_ORT_WORKERS:-4}") ;;  # many subprocess scenarios
    test_aot_prefill.py) xd=$(nx "${HLA_GPU_AOT_WORKERS:-6}") ;;  # ~300 cases; cubins built in phase 0
    *) xd=$(nx "${HLA_GPU_WORKERS:-2}") ;;
  esac
  envs=""
  if [ "$(basename "$f")" = test_aot_prefill.py ]; then
    # the cubins of THIS run's build step only (a warm machine keeps an older call's folder); without
    # them the file's session fixture builds them, so one process (not one build per xdist worker)
    if [ -f "$AOT_KERNEL_DIR/manifest.json" ] && grep -qx 'rc=0' "$LOG/build_aot_kernels.step" 2>/dev/null; then
      envs="HLA_DEPLOY_KERNEL_DIR=$AOT_KERNEL_DIR"
    else
      xd=""
    fi
  fi
  pytest_step "gpu_$(basename "$f" .py)" "$envs" "$xd" "$f"
done
SPEC_ENV="PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
pytest_step triton "$SPEC_ENV HLA_TRITON_SPECS=$LOG/triton_specs.json" \
  "$(nx "${HLA_GPU_TRITON_WORKERS:-8}") --dist loadscope" -p triton_spec_count tests/test_triton_hla.py
pytest_step triton_plan "$SPEC_ENV HLA_TRITON_SPECS=$LOG/triton_plan_specs.json" \
  "$(nx "${HLA_GPU_PLAN_WORKERS:-3}")" -p triton_spec_count tests/test_triton_plan.py
pytest_step ort_runtime_cuda "" "" tests/test_ort_runtime.py -k "cuda and not without_cuda_ep"
# bench_serve needs tritonserver (the [serve] extra: not on the GPU machine); it is a CPU benchmark that
# CI runs with a real server, so it is deselected here rather than skipped
pytest_step benchmarks_smoke "" "" tests/test_benchmarks_smoke.py -k "not bench_serve"

PARITY=("$PY" -X faulthandler tests/gpu/proc_probe.py -m hla_deploy parity hla_deploy/checkpoints/tiny-pystdlib
        --backends "torch,triton,ort-cpu,ort-cuda,onnx-standard" --decode-steps 32 --json "$LOG/parity.json")
if wanted parity_cuda; then
  ORDER=$((ORDER + 1)); NAMES+=(parity_cuda)
  if [ "$DRY" = 1 ]; then
    say "step parity_cuda (limit ${LIMIT} s): ${PARITY[*]}"
  else
    say "start parity_cuda: ${PARITY[*]}"
    run_step "$ORDER" parity_cuda parity "$LIMIT" "json=$LOG/parity.json" -- "${PARITY[@]}" &
  fi
fi

# opt-in steps, only when named in --steps: the diagnoses of docs/GPU.md (one call each)
optin_step() {  # name command...
  local name=$1; shift
  [ -n "$ONLY" ] && case ",$ONLY," in *",$name,"*) ;; *) return 0 ;; esac || return 0
  ORDER=$((ORDER + 1)); NAMES+=("$name")
  if [ "$DRY" = 1 ]; then say "step $name (limit ${LIMIT} s): $*"; return 0; fi
  say "start $name: $*"
  run_step "$ORDER" "$name" cmd "$LIMIT" -- "$@" &
}
optin_step diagnose_ort_cuda "$PY" tests/gpu/diagnose_ort_cuda.py --out "$LOG/diagnose_ort_cuda" --jobs 16 \
  --timeout "$(( LIMIT > 600 ? 240 : LIMIT * 2 / 5 ))" --budget "$(( LIMIT - 10 ))"
optin_step diagnose_triton "$PY" tests/gpu/diagnose_triton_hopper.py --json "$LOG/diagnose_triton.json" \
  --timeout "$(( LIMIT > 200 ? LIMIT - 30 : LIMIT / 2 ))"

if [ "$DRY" = 1 ]; then
  say "dry run: ${#NAMES[@]} test steps planned (${NAMES[*]}), limit ${LIMIT} s each, GPU present: $GPU, pytest-xdist: $XDIST"
  exit 0
fi
wait

echo
"$PY" tests/gpu/summarize_run.py "$LOG" --gpu "$GPU" --wall "$(elapsed)"
rc=$?
for d in diagnose_ort_cuda diagnose_triton; do  # their tables, when they ran
  if [ -f "$LOG/$d.log" ]; then echo; echo "[run_all] $d:"; grep -A 80 -E '^\[diagnose(_triton)?\] (scenario table|case / variant)' "$LOG/$d.log"; fi
done
if [ -n "$TAR" ]; then
  tar czf "$TAR" -C "$(dirname "$LOG")" "$(basename "$LOG")" && say "logs: $TAR"
fi
exit $rc
