"""The shell scripts of a device bundle (written by hla_deploy.exporters.bundle.write).

The scripts are fixed text; what differs between bundles is in ``bundle.env`` (sourced by every
script): TARGET, DTYPE, CUDA_ARCH, the state dims L H N, MAX_BATCH, OPT_SEQ, MAX_SEQ.

    tools/manifest.sh  verify_manifest: every file listed in manifest.json against its SHA-256
                       (sha256sum or shasum; sed); names each missing or changed file
    build.sh           ORT op (+ C++ checker and runner when a libonnxruntime.so.1 is found);
                       GPU targets: the TensorRT plugin (nvcc, TensorRT headers) and a copy of the
                       AOT cubins hla_kernels/ into build/lib/ (no Triton)
    engine.sh          GPU targets: trtexec engine build (flags: ENGINE_TRTEXEC_FLAGS)
    check.sh           manifest, build stamps, then hla_check.py (Python) and/or hla_golden_check (C++)

Only trtexec flags that TensorRT 10.3's trtexec accepts are used (TRTEXEC_10_3_FLAGS, from the
help text of samples/common/sampleOptions.cpp on NVIDIA/TensorRT branch release/10.3).
"""
from __future__ import annotations

#: The trtexec options engine.sh passes.
ENGINE_TRTEXEC_FLAGS = ("--onnx", "--saveEngine", "--stronglyTyped", "--dynamicPlugins", "--minShapes",
                        "--optShapes", "--maxShapes", "--timingCacheFile", "--skipInference")

#: Options listed by TensorRT 10.3's `trtexec --help` that engine.sh may use (the subset it needs,
#: each checked against release/10.3:samples/common/sampleOptions.cpp; tests re-check them there
#: when the TensorRT repository mirror is available). Note 10.3 has --dynamicPlugins and
#: --staticPlugins (the older --plugins was removed in 10.0).
TRTEXEC_10_3_FLAGS = frozenset({
    "--onnx", "--saveEngine", "--loadEngine", "--stronglyTyped", "--dynamicPlugins", "--staticPlugins",
    "--setPluginsToSerialize", "--minShapes", "--optShapes", "--maxShapes", "--shapes", "--timingCacheFile",
    "--skipInference", "--memPoolSize", "--builderOptimizationLevel", "--verbose", "--fp16", "--noTF32",
    "--iterations", "--warmUp", "--duration", "--useCudaGraph", "--noDataTransfers", "--profilingVerbosity",
})

MANIFEST_SH = r'''# tools/manifest.sh: sourced by build.sh, engine.sh and check.sh.
# verify_manifest: checks every file listed in manifest.json ("files": {"path": "sha256", ...})
# against its SHA-256 before anything runs; names each missing or changed file; returns 1 if any.
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  else echo "error: neither sha256sum nor shasum found (coreutils)" >&2; return 1; fi
}
verify_manifest() {
  if [ ! -f manifest.json ]; then echo "manifest: MISSING manifest.json" >&2; return 1; fi
  local bad=0 n=0 sum path actual
  while read -r sum path; do
    n=$((n + 1))
    if [ ! -f "$path" ]; then echo "manifest: MISSING $path" >&2; bad=1; continue; fi
    actual=$(sha256_of "$path") || return 1
    if [ "$actual" != "$sum" ]; then
      echo "manifest: CHANGED $path (sha256 $actual; manifest.json says $sum)" >&2; bad=1
    fi
  done < <(sed -n '/^  "files": {/,/^  }/p' manifest.json | sed -nE 's/^ *"([^"]+)": "([0-9a-f]{64})",?$/\2 \1/p')
  if [ "$n" -eq 0 ]; then echo "manifest: manifest.json lists no files" >&2; return 1; fi
  if [ "$bad" -ne 0 ]; then return 1; fi
  echo "manifest: $n files verified (SHA-256)"
}
bundle_id() { sha256_of manifest.json; }
'''

BUILD_SH = r'''#!/usr/bin/env bash
# build.sh: builds this bundle's native code ON THE DEVICE into build/:
#   build/lib/libhla_ort_op.so      ONNX Runtime custom op (CPU; HLA_ORT_CUDA=ON adds the CUDA EP kernels)
#   build/bin/hla_golden_check      C++ golden checker, and build/bin/hla_runner (C++ generation), when a
#                                   libonnxruntime.so.1 is found (ONNXRUNTIME_LIB, python3's onnxruntime
#                                   wheel, or /usr/lib/<triplet>, /usr/local/lib)
#   build/lib/libhla_trt_plugin.so  GPU targets: the TensorRT plugin (nvcc from CUDA_HOME=/usr/local/cuda,
#                                   TensorRT headers: TENSORRT_INCLUDE_DIR, TENSORRT_ROOT/include or JetPack's
#                                   /usr/include/aarch64-linux-gnu)
#   build/lib/hla_kernels/          GPU targets: a copy of hla_kernels/ (AOT prefill cubins + manifest.json,
#                                   built on the host), where the op and the plugin look for them
# Environment: JOBS, CXX, CUDA_ARCH, HLA_CMAKE_ARGS (extra CMake arguments, e.g. a toolchain file),
# HLA_BUILD_TRT=OFF (GPU targets: skip the TensorRT plugin, ONNX Runtime only).
set -euo pipefail
cd "$(dirname "$0")"
. ./bundle.env
. ./tools/manifest.sh
die() { echo "build.sh: error: $*" >&2; exit 1; }
verify_manifest || die "bundle files missing or changed (listed above); re-copy the bundle"

command -v cmake >/dev/null 2>&1 || die "cmake not found: install CMake >= 3.18 (Debian/JetPack: sudo apt-get install cmake)"
if [ -z "${CXX:-}" ] && [[ "${HLA_CMAKE_ARGS:-}" != *CMAKE_TOOLCHAIN_FILE* ]]; then
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || \
    die "no C++17 compiler found: sudo apt-get install g++ (or set CXX)"
fi
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
rm -rf build/lib build/bin build/BUILD_INFO
mkdir -p build/lib build/bin build/ort_lib

# ---- ONNX Runtime custom op (+ C++ checker and runner) -----------------------------------------
ORT_LIB=${ONNXRUNTIME_LIB:-}
if [ -z "$ORT_LIB" ]; then
  ORT_LIB=$(python3 -c 'import onnxruntime, pathlib; c = pathlib.Path(onnxruntime.__file__).parent / "capi"; l = sorted(c.glob("libonnxruntime.so.1*")); print(l[-1] if l else "")' 2>/dev/null || true)
fi
if [ -z "$ORT_LIB" ]; then
  for c in /usr/lib/aarch64-linux-gnu/libonnxruntime.so.1 /usr/lib/x86_64-linux-gnu/libonnxruntime.so.1 /usr/local/lib/libonnxruntime.so.1; do
    if [ -f "$c" ]; then ORT_LIB=$c; break; fi
  done
fi
TARGETS=(--target hla_ort_op)
ORT_ARGS=()
if [ -n "$ORT_LIB" ]; then
  [ -f "$ORT_LIB" ] || die "ONNXRUNTIME_LIB=$ORT_LIB: no such file"
  ln -sfn "$(cd "$(dirname "$ORT_LIB")" && pwd)/$(basename "$ORT_LIB")" build/ort_lib/libonnxruntime.so.1
  ORT_ARGS=(-DHLA_ORT_LIBRARY="$PWD/build/ort_lib/libonnxruntime.so.1")
  TARGETS+=(--target hla_golden_check --target hla_runner)
else
  echo "build.sh: no libonnxruntime.so.1 found (set ONNXRUNTIME_LIB=...): building the op library only;" \
       "check.sh will need python3 with onnxruntime and numpy" >&2
fi
# shellcheck disable=SC2086
cmake -S src/plugins -B build/ort -DCMAKE_BUILD_TYPE=Release -DONNXRUNTIME_INCLUDE_DIR="$PWD/src/onnxruntime/include" \
  -DHLA_WITH_CUDA="${HLA_ORT_CUDA:-OFF}" -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" ${ORT_ARGS[@]+"${ORT_ARGS[@]}"} \
  ${HLA_CMAKE_ARGS:-} || die "CMake could not configure the ONNX Runtime op (src/plugins; output above)"
cmake --build build/ort -j "$JOBS" "${TARGETS[@]}" || die "building the ONNX Runtime op failed (output above)"
cp build/ort/lib/libhla_ort_op.so build/lib/
for exe in hla_golden_check hla_runner; do
  if [ -f "build/ort/bin/$exe" ]; then cp "build/ort/bin/$exe" build/bin/; fi
done

# ---- TensorRT plugin (GPU targets) -----------------------------------------------------------------
TRT_VERSION=none
if [ "$TARGET" != cpu ] && [ "${HLA_BUILD_TRT:-ON}" = OFF ]; then
  echo "build.sh: HLA_BUILD_TRT=OFF: the TensorRT plugin is not built" >&2
elif [ "$TARGET" != cpu ]; then
  CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  NVCC=${CUDACXX:-$CUDA_HOME/bin/nvcc}
  [ -x "$NVCC" ] || die "nvcc not found at $NVCC: the TensorRT plugin needs the CUDA toolkit (JetPack: sudo apt-get install nvidia-jetpack; or set CUDA_HOME)"
  TRT_INC=${TENSORRT_INCLUDE_DIR:-}
  if [ -z "$TRT_INC" ] && [ -n "${TENSORRT_ROOT:-}" ]; then TRT_INC=$TENSORRT_ROOT/include; fi
  if [ -z "$TRT_INC" ]; then
    for c in /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu /usr/include; do
      if [ -f "$c/NvInferRuntime.h" ]; then TRT_INC=$c; break; fi
    done
  fi
  [ -n "$TRT_INC" ] && [ -f "$TRT_INC/NvInferRuntime.h" ] || \
    die "TensorRT headers not found (NvInferRuntime.h; JetPack: sudo apt-get install libnvinfer-dev; or set TENSORRT_INCLUDE_DIR / TENSORRT_ROOT)"
  TRT_VERSION=$(sed -nE 's/^#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +([0-9]+).*/\4/p' "$TRT_INC/NvInferVersion.h" 2>/dev/null | head -3 | paste -sd.)
  # shellcheck disable=SC2086
  cmake -S src/plugins/trt_hla -B build/trt -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" -DHLA_WITH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DTENSORRT_INCLUDE_DIR="$TRT_INC" -DHLA_TRT_BUILD_TESTS=OFF \
    ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"} ${HLA_CMAKE_ARGS:-} || die "CMake could not configure the TensorRT plugin (output above)"
  cmake --build build/trt -j "$JOBS" --target hla_trt_plugin || die "building the TensorRT plugin failed (output above)"
  cp build/trt/lib/libhla_trt_plugin.so build/lib/
fi

# ---- AOT prefill kernels (cubins built on the host; the launcher looks beside the libraries) --------
KERNELS=0
if [ -f hla_kernels/manifest.json ]; then
  rm -rf build/lib/hla_kernels
  cp -R hla_kernels build/lib/hla_kernels
  KERNELS=$(find build/lib/hla_kernels -name '*.cubin' | wc -l | tr -d ' ')
fi

{
  echo "bundle_id $(bundle_id)"
  echo "target $TARGET"
  echo "onnxruntime_lib ${ORT_LIB:-none}"
  echo "tensorrt ${TRT_VERSION:-unknown}"
  echo "cuda_arch $CUDA_ARCH"
  echo "aot_cubins $KERNELS"
} > build/BUILD_INFO
echo "build.sh: OK: $(cd build && ls lib/* bin/* 2>/dev/null | tr '\n' ' ')"
'''

ENGINE_SH = r'''#!/usr/bin/env bash
# engine.sh: builds the TensorRT engine build/model.plan ON THE DEVICE with trtexec (engines are tied to
# the GPU and the TensorRT version): strongly typed (precision = the export's dtype), the HLA plugin
# loaded, one profile from decode (T = 1) to prefill (T = MAX_SEQ), a timing cache build/timing.cache.
# Environment: TRTEXEC (default: trtexec on PATH, else JetPack's /usr/src/tensorrt/bin/trtexec),
# MAX_SEQ, OPT_SEQ, MAX_BATCH.
set -euo pipefail
cd "$(dirname "$0")"
. ./bundle.env
. ./tools/manifest.sh
die() { echo "engine.sh: error: $*" >&2; exit 1; }
verify_manifest || die "bundle files missing or changed (listed above); re-copy the bundle"
[ -f build/BUILD_INFO ] || die "build/BUILD_INFO missing: run ./build.sh first"
grep -qx "bundle_id $(bundle_id)" build/BUILD_INFO || die "build/ was built from another bundle: re-run ./build.sh"
[ -f build/lib/libhla_trt_plugin.so ] || die "missing library build/lib/libhla_trt_plugin.so: run ./build.sh first"
TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}
[ -x "$TRTEXEC" ] || die "trtexec not found ($TRTEXEC): JetPack installs it as /usr/src/tensorrt/bin/trtexec; set TRTEXEC"
B=${MAX_BATCH:-1}; T=${MAX_SEQ:-2048}; O=${OPT_SEQ:-128}
[ "$O" -le "$T" ] || O=$T
S="${L}x"; E="x${H}x${N}"
rm -f build/model.plan build/ENGINE_INFO
"$TRTEXEC" --onnx=model/model.onnx --saveEngine=build/model.plan.tmp --stronglyTyped \
  --dynamicPlugins=build/lib/libhla_trt_plugin.so \
  --minShapes=input_ids:1x1,state:${S}1${E} --optShapes=input_ids:${B}x${O},state:${S}${B}${E} \
  --maxShapes=input_ids:${B}x${T},state:${S}${B}${E} --timingCacheFile=build/timing.cache --skipInference \
  2>&1 | tee build/engine.log || die "trtexec failed (build/engine.log)"
[ -f build/model.plan.tmp ] || die "trtexec wrote no engine (build/engine.log)"
V=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || sed -nE 's/.*TensorRT version: ([0-9.]+).*/\1/p' build/engine.log | head -1)
mv build/model.plan.tmp build/model.plan
{
  echo "bundle_id $(bundle_id)"
  echo "tensorrt ${V:-unknown}"
  echo "plugin_sha256 $(sha256_of build/lib/libhla_trt_plugin.so)"
  echo "profile input_ids 1x1 ${B}x${O} ${B}x${T}"
} > build/ENGINE_INFO
echo "engine.sh: OK: build/model.plan (TensorRT ${V:-unknown})"
'''

CHECK_SH = r'''#!/usr/bin/env bash
# check.sh: verifies the bundle (manifest.json SHA-256 of every file) and the build stamps, then runs the
# golden prompts through every backend present and compares with golden/ (recorded at bundle time from
# the reference model) within the tolerances in golden/index.txt. Prints a table; exit 0 PASS, 1 FAIL.
#   python3 with onnxruntime + numpy: hla_check.py (ort-cpu, ort-cuda, onnx-standard, trt)
#   build/bin/hla_golden_check (C++, no Python): ort-cpu
# HLA_CHECK_RUNNER=auto|python|cpp|both (default auto: both where present); HLA_RUN_PREFIX runs the C++
# checker through a wrapper (e.g. "qemu-aarch64-static -L /usr/aarch64-linux-gnu").
set -euo pipefail
cd "$(dirname "$0")"
. ./bundle.env
. ./tools/manifest.sh
fail() { echo "check: FAIL: $*" >&2; exit 1; }
verify_manifest || fail "bundle files missing or changed (listed above)"
[ -f build/BUILD_INFO ] || fail "build/BUILD_INFO missing: run ./build.sh first"
grep -qx "bundle_id $(bundle_id)" build/BUILD_INFO || fail "build/BUILD_INFO: build/ was built from another bundle (or another version of this one): re-run ./build.sh"
[ -f build/lib/libhla_ort_op.so ] || fail "missing library build/lib/libhla_ort_op.so: run ./build.sh"
if [ -d hla_kernels ]; then
  diff -rq hla_kernels build/lib/hla_kernels >/dev/null 2>&1 || \
    fail "build/lib/hla_kernels differs from hla_kernels/ (the AOT cubins): re-run ./build.sh"
fi
if [ -f build/model.plan ]; then
  [ -f build/ENGINE_INFO ] || fail "build/model.plan has no build/ENGINE_INFO: it was not built by ./engine.sh; re-run ./engine.sh"
  grep -qx "bundle_id $(bundle_id)" build/ENGINE_INFO || fail "build/model.plan was built from another bundle: re-run ./engine.sh"
  grep -qx "plugin_sha256 $(sha256_of build/lib/libhla_trt_plugin.so 2>/dev/null)" build/ENGINE_INFO || \
    fail "build/model.plan was built with another build/lib/libhla_trt_plugin.so: re-run ./engine.sh"
fi
RUNNER=${HLA_CHECK_RUNNER:-auto}
have_py=0
if python3 -c 'import numpy, onnxruntime' >/dev/null 2>&1; then have_py=1; fi
have_cpp=0
if [ -x build/bin/hla_golden_check ]; then have_cpp=1; fi
case "$RUNNER" in
  auto|both) ;;
  python) have_cpp=0; [ $have_py = 1 ] || fail "HLA_CHECK_RUNNER=python but python3 cannot import numpy and onnxruntime" ;;
  cpp) have_py=0; [ $have_cpp = 1 ] || fail "HLA_CHECK_RUNNER=cpp but build/bin/hla_golden_check is missing (build.sh found no libonnxruntime.so.1; set ONNXRUNTIME_LIB)" ;;
  *) fail "HLA_CHECK_RUNNER must be auto, python, cpp or both, got $RUNNER" ;;
esac
if [ "$RUNNER" = both ]; then
  [ $have_py = 1 ] || fail "HLA_CHECK_RUNNER=both but python3 cannot import numpy and onnxruntime"
  [ $have_cpp = 1 ] || fail "HLA_CHECK_RUNNER=both but build/bin/hla_golden_check is missing"
fi
[ $have_py = 1 ] || [ $have_cpp = 1 ] || fail "nothing to check with: no python3 with onnxruntime + numpy and no build/bin/hla_golden_check (pip install onnxruntime numpy, or set ONNXRUNTIME_LIB and re-run ./build.sh)"
rc=0
if [ $have_py = 1 ]; then python3 hla_check.py "$@" || rc=1; fi
if [ $have_cpp = 1 ]; then
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH="$PWD/build/ort_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ${HLA_RUN_PREFIX:-} build/bin/hla_golden_check \
    --model model/model.onnx --library build/lib/libhla_ort_op.so --golden golden/index.txt "$@" || rc=1
fi
if [ $rc -eq 0 ]; then echo "check: PASS ($TARGET, $DTYPE)"; else echo "check: FAIL (see the table above)"; fi
exit $rc
'''
