"""One process, a chosen sequence of steps: torch, Triton, ORT CPU / CUDA sessions (issue 12/19).

    python3 -X faulthandler tests/gpu/proc_probe.py tests/gpu/ort_cuda_sequence.py \\
        --steps torch,cudainit,triton,export,ort,ortcpu-drop,ortcuda --out DIR [--library LIB] [--onnx M.onnx]

Each step prints ``[seq] > NAME`` before and ``[seq] < NAME ok (S s)`` after, to stderr, flushed,
followed by the CUDA libraries the step made the process map (``[seq]   + path``): the last
``>`` without its ``<`` is where a process died, and the ``+`` lines say which copy of
libcudart / libcublas / the ORT CUDA provider came from where, and when. Used by
tests/gpu/diagnose_ort_cuda.py (the scenario matrix); by hand for one scenario.

Steps: torch (import), cudainit (a CUDA context and a cuBLAS matmul in torch), triton (the demo
model on CUDA with the Triton kernels, prefill [4, 72] + 4 decode steps, as parity's reference),
export / export-std (the demo checkpoint to ONNX, custom / standard ops, in this process), ort
(import onnxruntime; version, build info, providers, plugin EP devices), preload
(onnxruntime.preload_dlls()), ortcpu (OrtHLASession on the CPU EP, kept alive), ortcpu-drop (the
same, then deleted, as parity drops each backend before the next), ortcuda (OrtHLASession on the
CUDA EP: creation, a plain run, reset/prefill/step through IOBinding), ortcuda-raw (a plain
InferenceSession with the library, CUDA + CPU EPs, numpy feeds: issue 12's run), stdcuda (the
standard-op graph on the CUDA EP, no custom library), parity (run_parity in this process with
torch,triton,ort-cpu,ort-cuda,onnx-standard, 32 decode steps).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_probe import mapped_libraries  # noqa: E402

CTX: dict = {}
STEPS = {}


def step(name):
    def reg(fn):
        STEPS[name] = fn
        return fn
    return reg


def log(msg):
    print(f"[seq] {msg}", file=sys.stderr, flush=True)


def _ids():
    import numpy as np
    return np.random.default_rng(0).integers(32, 127, (4, 72)).astype(np.int64)


@step("torch")
def _torch():
    import torch
    log(f"  torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()}")


@step("cudainit")
def _cudainit():
    import torch
    x = torch.randn(1024, 1024, device="cuda")
    log(f"  matmul sum {float((x @ x).sum()):.3e} on {torch.cuda.get_device_name(0)}")


@step("triton")
def _triton():
    import torch
    from hla_deploy.models import HLALanguageModel, default_checkpoint
    model = HLALanguageModel.load(default_checkpoint()).eval().to("cuda")
    model.attn_backend = "triton"
    ids = torch.from_numpy(_ids()).cuda()
    with torch.no_grad():
        logits, state = model(ids, None)
        for t in range(4):
            logits, state = model(ids[:, t:t + 1], state)
    torch.cuda.synchronize()
    CTX["torch_model"] = model
    log(f"  triton logits finite: {bool(torch.isfinite(logits).all())}")


def _export(op):
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import default_checkpoint
    path = Path(CTX["out"]) / f"demo_{op}.onnx"
    CTX[f"onnx_{op}"] = str(export_onnx(default_checkpoint(), None, path, op=op))


@step("export")
def _export_custom():
    _export("custom")


@step("export-std")
def _export_standard():
    _export("standard")


@step("ort")
def _ort():
    import onnxruntime as ort
    CTX["ort"] = ort
    log(f"  onnxruntime {ort.__version__} from {ort.__file__}")
    log(f"  build info: {ort.get_build_info() if hasattr(ort, 'get_build_info') else '?'}")
    log(f"  providers: {ort.get_available_providers()}")
    if hasattr(ort, "get_ep_devices"):
        try:
            log(f"  plugin EP devices: {[(d.ep_name, d.device.type) for d in ort.get_ep_devices()]}")
        except Exception as e:  # noqa: BLE001  (diagnostic only)
            log(f"  get_ep_devices failed: {e!r}")


@step("preload")
def _preload():
    CTX["ort"].preload_dlls()


def _session(device):
    from hla_deploy.runtime import OrtHLASession
    return OrtHLASession(CTX["onnx_custom"], device=device, library=CTX["library"], tf32=False)


@step("ortcpu")
def _ortcpu():
    s = _session("cpu")
    CTX["cpu_logits"] = s.run(_ids())[0]
    CTX["cpu_session"] = s


@step("ortcpu-drop")
def _ortcpu_drop():
    s = _session("cpu")
    CTX["cpu_logits"] = s.run(_ids())[0]
    del s
    gc.collect()


@step("ortcuda")
def _ortcuda():
    import numpy as np
    s = _session("cuda")
    log(f"  CUDA session created, providers {s.providers}")
    logits, _ = s.run(_ids())
    log("  plain run done")
    s.reset(4)
    s.prefill(_ids()[:, :64])
    for t in range(64, 72):
        s.step(_ids()[:, t])
    log("  IOBinding prefill + 8 steps done")
    if "cpu_logits" in CTX:
        a, b = np.asarray(CTX["cpu_logits"], np.float64), np.asarray(logits, np.float64)
        log(f"  CUDA vs CPU logits rel RMS {np.linalg.norm(a - b) / np.linalg.norm(a):.3e}")
    CTX["cuda_session"] = s


@step("ortcuda-raw")
def _ortcuda_raw():
    import numpy as np
    ort = CTX["ort"]
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(CTX["library"]))
    so.log_severity_level = 3
    sess = ort.InferenceSession(CTX["onnx_custom"], so, providers=[
        ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"}), "CPUExecutionProvider"])
    log(f"  raw CUDA session created, providers {sess.get_providers()}")
    shape = [d if isinstance(d, int) else 4 for d in sess.get_inputs()[1].shape]
    out = sess.run(None, {"input_ids": _ids(), "state": np.zeros(shape, np.float32)})
    log(f"  raw plain run done, logits finite {bool(np.isfinite(out[0]).all())}")


@step("stdcuda")
def _stdcuda():
    import numpy as np
    ort = CTX["ort"]
    sess = ort.InferenceSession(CTX["onnx_standard"], providers=[
        ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"}), "CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 4 for d in sess.get_inputs()[1].shape]
    out = sess.run(None, {"input_ids": _ids(), "state": np.zeros(shape, np.float32)})
    log(f"  standard-op graph on {sess.get_providers()[0]}: logits finite {bool(np.isfinite(out[0]).all())}")


@step("parity")
def _parity():
    from hla_deploy.models import default_checkpoint
    from hla_deploy.parity import run_parity
    rep = run_parity(default_checkpoint(), backends="torch,triton,ort-cpu,ort-cuda,onnx-standard",
                     decode_steps=32, library=CTX["library"], log=log)
    log(f"  parity summary {rep['summary']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", required=True, help="comma-separated: " + ",".join(STEPS))
    ap.add_argument("--out", required=True, help="folder for exported graphs")
    ap.add_argument("--library", help="libhla_ort_op.so (default: hla_deploy.native.ort_library_path())")
    ap.add_argument("--onnx", help="a custom-op export of the demo (instead of the export step)")
    ap.add_argument("--onnx-std", help="a standard-op export of the demo (instead of export-std)")
    a = ap.parse_args(argv)
    names = [s for s in a.steps.split(",") if s]
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        ap.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    CTX["out"] = a.out
    CTX["onnx_custom"], CTX["onnx_standard"] = a.onnx, a.onnx_std
    if a.library:
        CTX["library"] = a.library
    else:
        from hla_deploy.native import ort_library_path
        CTX["library"] = str(ort_library_path(build=True))
    seen = set(mapped_libraries())
    for name in names:
        log(f"> {name}")
        t0 = time.perf_counter()
        STEPS[name]()
        log(f"< {name} ok ({time.perf_counter() - t0:.1f} s)")
        now = set(mapped_libraries())
        for lib in sorted(now - seen):
            log(f"  + {lib}")
        seen = now
    log(f"all steps done; torch imported: {'torch' in sys.modules}")


if __name__ == "__main__":
    main()
