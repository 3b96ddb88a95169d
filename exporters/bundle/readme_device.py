"""README.md of a device bundle: the commands in order and what each prints when it works."""
from __future__ import annotations


def device_readme(meta: dict, golden: dict) -> str:
    target, dtype, gpu = meta["target"], meta["dtype"], meta["target"] != "cpu"
    v = meta["versions"]
    kernels = (meta.get("kernels") or {}).get("configs")
    prereq = {
        "jetson-orin": "JetPack 6.1/6.2 (CUDA 12.6 at /usr/local/cuda, TensorRT 10.3 headers and libraries under "
                       "/usr/include/aarch64-linux-gnu and /usr/lib/aarch64-linux-gnu, trtexec at "
                       "/usr/src/tensorrt/bin/trtexec), `sudo apt-get install cmake g++`. ONNX Runtime for the "
                       "checks: `pip install onnxruntime numpy` (PyPI has a CPU aarch64 wheel; there is no "
                       "official aarch64 onnxruntime-gpu wheel), or a libonnxruntime.so.1 for the C++ checker "
                       "(`ONNXRUNTIME_LIB=/path/libonnxruntime.so.1.x.y ./build.sh`).",
        "x86-cuda": "CUDA 12.x or 13 (nvcc at $CUDA_HOME/bin/nvcc, default /usr/local/cuda), TensorRT >= 10.3 "
                    "(`export TENSORRT_ROOT=/path/to/TensorRT`, trtexec on PATH or TRTEXEC=...), cmake, g++, "
                    "`pip install onnxruntime numpy` (or onnxruntime-gpu for the ort-cuda check).",
        "cpu": "cmake (>= 3.18), a C++17 compiler and `pip install onnxruntime numpy` (or only a "
               "libonnxruntime.so.1: `ONNXRUNTIME_LIB=... ./build.sh`, then the C++ checker runs).",
    }[target]
    steps = ["./build.sh     # builds build/lib/libhla_ort_op.so, build/bin/hla_golden_check"
             + (" and build/lib/libhla_trt_plugin.so" if gpu else "")
             + (", copies the AOT prefill cubins hla_kernels/ to build/lib/hla_kernels/" if kernels else "")
             + "; ends with `build.sh: OK: ...`"]
    if gpu:
        steps.append("./engine.sh    # trtexec -> build/model.plan (minutes); ends with `engine.sh: OK: build/model.plan (TensorRT x.y.z)`")
    steps.append("./check.sh     # manifest, then the golden check on every backend present; ends with `check: PASS`")
    lines = [
        f"# hla-deploy bundle `{meta['name']}` ({target}, {dtype})",
        "",
        f"Model `{meta['model_id'][:16]}...` ({meta['model_config'].get('variant')}, "
        f"{meta['model_config'].get('n_layers')} layers), exported by hla-deploy {v['hla_deploy']} "
        f"(op contract {v['op_contract']}, ONNX opset {v['onnx_opset']}, ONNX Runtime headers API "
        f"{v['onnxruntime_headers_api']}" + (f", TensorRT target {v['tensorrt_target']}" if gpu else "") + ").",
        "Nothing here needs PyTorch or an hla-deploy checkout."
        + (f" The prefill (T > 1) runs the AOT Triton kernels in hla_kernels/ ({', '.join(meta['kernels']['archs'])}: "
           f"{', '.join(kernels)}; compiled on the host, no Triton needed here); other shapes and the decode step "
           f"run the token-serial CUDA kernel." if kernels else ""),
        "",
        "## Needs",
        "",
        prereq,
        "",
        "## Commands, in order",
        "",
        "```",
        *steps,
        "```",
        "",
        "Every script first verifies `manifest.json` (SHA-256 of every file); a changed or missing file is "
        "named (`manifest: CHANGED model/model.onnx ...`) and the script stops.",
        "",
        "`check.sh` prints one table row per backend, e.g.",
        "",
        "```",
        "backend          max_abs_err  rel_rms_err   min_cosine  token_agree state_rel_err  result",
        "ort-cpu              ...          ...          ...         1.0000          ...    PASS",
        "onnx-standard        ...                                                          PASS",
        "ort-cuda                                                                          skipped: ...",
        "trt                                                                               " + ("PASS" if gpu else "skipped: no engine"),
        "check: PASS (" + target + ", " + dtype + ")",
        "```",
        "",
        "Backends: `ort-cpu` (model/model.onnx + the custom op), `ort-cuda` (the same on onnxruntime's CUDA EP, "
        "where installed), `onnx-standard` (model/model_standard.onnx in stock ONNX Runtime), `trt` "
        "(build/model.plan with TensorRT's Python package and libcudart), and the C++ checker "
        "`ort-cpu (C++)` when build.sh found a libonnxruntime.so.1. A backend whose runtime is absent is "
        "`skipped: <reason>`; one whose files are missing or do not load is `FAIL: <file and why>`.",
        f"Golden outputs: {len(golden['cases'])} prompts, prefill then {golden['cases'][0]['decode_steps']} "
        f"greedy steps, from the reference: {golden['reference']['description']}.",
        "Tolerances (" + dtype + "): " + ", ".join(f"{k} {val:g}" for k, val in meta["tolerances"].items()) + ".",
        "",
        "Generate text with the C++ runner: `LD_LIBRARY_PATH=build/ort_lib build/bin/hla_runner --model "
        "model/model.onnx --library build/lib/libhla_ort_op.so --prompt 'def ' --max-new-tokens 64`.",
        "",
        "Environment: `JOBS`, `CXX`, `HLA_CMAKE_ARGS` (build.sh), `CUDA_HOME`, `TENSORRT_ROOT`, "
        "`TENSORRT_INCLUDE_DIR`, `CUDA_ARCH`, `HLA_ORT_CUDA=ON` (build the ORT op's CUDA kernels for an "
        "onnxruntime-gpu build), `TRTEXEC`, `MAX_SEQ`, `OPT_SEQ`, `MAX_BATCH` (engine.sh), "
        "`HLA_CHECK_RUNNER=auto|python|cpp|both`, `HLA_RUN_PREFIX` (check.sh).",
        "",
    ]
    if gpu:
        lines += ["engine.sh runs: `trtexec --onnx=model/model.onnx --saveEngine=build/model.plan --stronglyTyped "
                  "--dynamicPlugins=build/lib/libhla_trt_plugin.so --minShapes=... --optShapes=... --maxShapes=... "
                  "--timingCacheFile=build/timing.cache --skipInference` (flags of TensorRT 10.3's trtexec).", ""]
    return "\n".join(lines)
