"""The AOT prefill on a GPU: the ahead-of-time compiled Triton kernels run by the C++ launcher
(plugins/common/hla_aot_launcher.h) through hla::forward_cuda, against the Triton JIT forward
`hla_attention_triton` on the same inputs and state (the same kernels: bit-identical in fp16 and
bf16, max abs difference 0; fp32 within float32 rounding), every hla2 option and ahla, d = dv = 64,
T in {2, 63, 64, 65, 1000, 4100}:

- through the ctypes capi library (no onnxruntime-gpu needed; the early GPU call);
- through the ORT CUDA op (onnxruntime-gpu; skipped with the reason without it);
- prefill then token-serial decode hand-off, in-place state, CUDA-graph replay, the path taken;
- the TensorRT plugin's enqueue with the same launcher (mocked TensorRT, hla_trt_plugin_test).

The cubins: a session fixture runs `hla-deploy build-plugins --kernels-only --arch <this GPU>
--config ...` (the 18 configurations below) into a temporary kernel directory, or uses
$HLA_DEPLOY_KERNEL_DIR when it already holds a manifest.json (build once, run many).
Run on the device machine:  python3 -m pytest tests/gpu/test_aot_prefill.py -q -rs
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # one skip with the reason, not one per parametrised case
    pytest.skip("no CUDA GPU (torch.cuda): the AOT prefill runs only on a GPU machine", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from test_native_kernels import BOUNDS, _decay, make_inputs, random_state, ref_recurrent, rel_rms  # noqa: E402

DT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
CASES = [  # variant, normalize, ridge, decay: every configuration option, scalar and per-head decay
    ("hla2", False, 0.0, None),
    ("hla2", False, 0.0, "per_head"),
    ("hla2", True, 0.0, "per_head"),
    ("hla2", False, 0.3, 0.9),
    ("hla2", True, 0.3, "per_head"),
    ("ahla", False, 0.0, None),
    ("ahla", False, 0.0, "per_head"),
    ("ahla", True, 0.0, "per_head"),
]
TS = [2, 63, 64, 65, 1000, 4100]
B, H, D = 2, 3, 64
STATE_BOUND = 1e-5  # hand-off vs the float64 reference (float32 state)


def config_name(variant, normalize, ridge, dtype_name, d=D, dv=D):
    has_c = variant == "hla2" and ridge != 0.0
    return f"{variant}-n{int(normalize)}-c{int(has_c)}-d{d}-dv{dv}-{SHORT[dtype_name]}"


CONFIGS = sorted({config_name(c[0], c[1], c[2], dt) for c in CASES for dt in DT})


def _case_id(c):
    return f"{c[0]}-norm{int(c[1])}-ridge{c[2]}-decay{c[3]}"


def build_kernel_dir(out) -> str:
    """`hla-deploy build-plugins --kernels-only` of CONFIGS for this GPU's arch into `out`; returns
    its output. The session fixture below and tests/gpu/run_all.sh's phase 0 both call this."""
    major, minor = torch.cuda.get_device_capability()
    cmd = [sys.executable, "-m", "hla_deploy", "build-plugins", "--kernels-only", "--arch", f"{major}{minor}",
           "--kernel-dir", str(out)] + [a for c in CONFIGS for a in ("--config", c)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise RuntimeError(f"building the AOT kernels failed ({proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if not (Path(out) / "manifest.json").is_file():
        raise RuntimeError(f"{' '.join(cmd)} wrote no {Path(out) / 'manifest.json'}:\n{proc.stdout[-3000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    """A kernel directory holding CONFIGS for this GPU's arch; exported as HLA_DEPLOY_KERNEL_DIR
    (read by every launcher loaded after this fixture, and re-read by the capi after aot_reset)."""
    given = os.environ.get("HLA_DEPLOY_KERNEL_DIR", "").split(":")[0]
    if given and (Path(given) / "manifest.json").is_file():
        return Path(given)
    out = tmp_path_factory.mktemp("aot-kernels")
    try:
        build_kernel_dir(out)
    except RuntimeError as e:
        pytest.fail(str(e))
    os.environ["HLA_DEPLOY_KERNEL_DIR"] = str(out)
    return out


@pytest.fixture(scope="session")
def aot(capi, kernel_dir):
    """The CUDA capi library with the launcher reading `kernel_dir` (and its warnings captured)."""
    os.environ["HLA_DEPLOY_KERNEL_DIR"] = str(kernel_dir)
    capi.aot_reset()
    capi.capture_log(True)
    yield capi
    capi.capture_log(False)


def _round(x, dtype_name):
    return torch.from_numpy(np.asarray(x, np.float32)).to(DT[dtype_name])


def _inputs(case, dtype_name, T, seed_extra=()):
    variant, normalize, ridge, dspec = case
    rng = np.random.default_rng(zlib.crc32(repr((case, dtype_name, T) + tuple(seed_extra)).encode()))
    decay = _decay(dspec, H, rng)
    q, k, v = make_inputs(rng, B, T, H, D, D, variant, normalize)
    st = random_state(rng, B, H, variant, D, D, normalize, ridge, warm=True)
    dev = torch.device("cuda")
    tq, tk, tv = (_round(x, dtype_name).to(dev) for x in (q, k, v))
    return tq, tk, tv, torch.from_numpy(st).to(dev), decay


def _triton(tq, tk, tv, st, case, decay):
    from hla_deploy.ops.triton import hla_attention_triton
    variant, normalize, ridge, _ = case
    return hla_attention_triton(tq, tk, tv, variant, decay=1.0 if decay is None else [float(x) for x in decay],
                                normalize=normalize, eps=1e-6, ridge=ridge, initial_state=st.clone(),
                                output_final_state=True)


def _assert_same(o, s, o_ref, s_ref, dtype_name, what):
    """fp16 / bf16: bit-identical (max abs diff 0); fp32: within float32 rounding."""
    do = (o.double() - o_ref.double()).abs().max().item()
    ds = (s.double() - s_ref.double()).abs().max().item()
    if dtype_name == "float32":
        assert rel_rms(o.cpu().numpy(), o_ref.cpu().numpy()) < 1e-6, (what, do, ds)
        assert rel_rms(s.cpu().numpy(), s_ref.cpu().numpy()) < 1e-6, (what, do, ds)
    else:
        assert do == 0.0 and ds == 0.0, f"{what}: max|o - o_triton| = {do}, max|state - state_triton| = {ds}"


# ---- through the capi (hla::forward_cuda) ----------------------------------------------------------

@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_capi_prefill_equals_triton_forward(aot, case, dtype_name, T):
    variant, normalize, ridge, _ = case
    tq, tk, tv, st, decay = _inputs(case, dtype_name, T)
    assert aot.prefill_aot(variant, B, T, H, D, D, normalize, ridge, dtype_name), \
        (config_name(variant, normalize, ridge, dtype_name), aot.take_log())
    kw = dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    o, s = aot.forward_cuda(tq, tk, tv, st, **kw)
    o_tr, s_tr = _triton(tq, tk, tv, st, case, decay)
    torch.cuda.synchronize()
    assert torch.isfinite(o.float()).all() and torch.isfinite(s).all()
    _assert_same(o, s, o_tr, s_tr, dtype_name, f"{_case_id(case)} {dtype_name} T={T}")
    if T in (2, 65):  # in place (the launcher copies state_in into the workspace): same bits
        st2 = st.clone()
        o2, _ = aot.forward_cuda(tq, tk, tv, st2, state_out=st2, **kw)
        torch.cuda.synchronize()
        assert torch.equal(o2, o) and torch.equal(st2, s)
    assert aot.take_log() == []  # no warning: every configuration has its kernels


@pytest.mark.parametrize("case", [CASES[2], CASES[4], CASES[7]], ids=_case_id)
def test_capi_prefill_matches_float64_reference(aot, case):
    """The AOT path against the float64 contract-step reference (bf16 inputs, T = 1000)."""
    variant, normalize, ridge, _ = case
    tq, tk, tv, st, decay = _inputs(case, "bfloat16", 1000, ("ref",))
    o, s = aot.forward_cuda(tq, tk, tv, st, variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    torch.cuda.synchronize()
    o_ref, s_ref = ref_recurrent(*(x.double().cpu().numpy() for x in (tq, tk, tv)), st.cpu().numpy(), variant,
                                 1.0 if decay is None else decay, normalize, 1e-6, ridge)
    assert rel_rms(o.double().cpu().numpy(), o_ref) < 2e-2   # the Triton forward's bf16 bound (test_triton_hla)
    assert rel_rms(s.cpu().numpy(), s_ref) < 2e-2


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("variant", ["hla2", "ahla"])
def test_prefill_then_decode_hand_off(aot, variant, dtype_name):
    """AOT prefill of 1000 tokens, then 20 token-serial decode steps in place: the state handed over
    is the Triton forward's (bit-identical), and the steps continue it as the reference does."""
    normalize, ridge = True, (0.25 if variant == "hla2" else 0.0)
    case = (variant, normalize, ridge, "per_head")
    T1, T = 1000, 1020
    tq, tk, tv, st0, decay = _inputs(case, dtype_name, T, ("handoff",))
    kw = dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    st = st0.clone()
    o_a, _ = aot.forward_cuda(tq[:, :T1].contiguous(), tk[:, :T1].contiguous(), tv[:, :T1].contiguous(), st,
                              state_out=st, **kw)
    o_tr, s_tr = _triton(tq[:, :T1].contiguous(), tk[:, :T1].contiguous(), tv[:, :T1].contiguous(), st0, case, decay)
    torch.cuda.synchronize()
    assert torch.equal(o_a, o_tr) and torch.equal(st, s_tr)
    outs = []
    for t in range(T1, T):
        o_t, _ = aot.forward_cuda(tq[:, t:t + 1].contiguous(), tk[:, t:t + 1].contiguous(),
                                  tv[:, t:t + 1].contiguous(), st, state_out=st, **kw)
        outs.append(o_t)
    torch.cuda.synchronize()
    o_steps = torch.cat(outs, dim=1).double().cpu().numpy()
    o_ref, st_ref = ref_recurrent(*(x[:, T1:].double().cpu().numpy() for x in (tq, tk, tv)), s_tr.cpu().numpy(),
                                  variant, decay, normalize, 1e-6, ridge)
    assert rel_rms(o_steps, o_ref) < BOUNDS[dtype_name]
    assert rel_rms(st.cpu().numpy(), st_ref) < STATE_BOUND


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[7]], ids=_case_id)
def test_aot_prefill_replays_from_a_cuda_graph(aot, case):
    """Eager, then captured once and replayed: bit-identical (the decay memsets, the state copy of the
    in-place call and the kernels are all graph nodes)."""
    variant, normalize, ridge, _ = case
    T = 2048
    tq, tk, tv, st0, decay = _inputs(case, "bfloat16", T, ("graph",))
    kw = dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    o_eager, st_eager = aot.forward_cuda(tq, tk, tv, st0.clone(), **kw)
    ws = torch.empty(aot.cuda_workspace_size(variant, B, T, H, D, D, normalize, ridge, "bfloat16"),
                     dtype=torch.uint8, device="cuda")
    st, o = st0.clone(), torch.empty_like(o_eager)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture (first call loads the cubins)
        aot.forward_cuda(tq, tk, tv, st, state_out=st, o=o, workspace=ws, **kw)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(graph, stream=s):
            aot.forward_cuda(tq, tk, tv, st, state_out=st, o=o, workspace=ws, **kw)
    for _ in range(2):
        st.copy_(st0)
        o.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(o, o_eager) and torch.equal(st, st_eager)


def test_paths_taken(aot):
    assert not aot.prefill_aot("hla2", 1, 1, 8, 64, 64)                          # decode: token-serial
    assert not aot.prefill_aot("hla3", 1, 512, 8, 64, 64)                        # hla3: token-serial
    assert aot.prefill_aot("hla2", 1, 512, 8, 64, 64, dtype_name="float16")
    assert aot.prefill_aot("ahla", 1, 512, 8, 64, 64, True, dtype_name="bfloat16")
    assert aot.cuda_workspace_size("hla2", 1, 1, 8, 64, 64) == 0
    assert aot.cuda_workspace_size("hla2", 1, 512, 8, 64, 64, dtype_name="float16") > 0
    assert not aot.prefill_aot("hla2", 1, 512, 8, 48, 48, dtype_name="float16")  # not built: token-serial
    log = aot.take_log()
    assert len(log) == 1 and "hla2-n0-c0-d48-dv48-fp16" in log[0][1], log


def test_driver_reports_no_static_shared_memory(kernel_dir):
    """What the mocked driver (plugins/common/tests/fake_cuda_driver.cpp) assumes of real cubins, on the
    real driver: SHARED_SIZE_BYTES 0 (an sm_90 cubin's 1 KB .nv.shared.<kernel> is the block's
    reserved shared memory, not static) and MAX_DYNAMIC_SHARED_SIZE_BYTES 48 KB before any opt-in."""
    import ctypes
    import json
    torch.zeros(1, device="cuda")  # the primary context, current on this thread
    cu = ctypes.CDLL("libcuda.so.1")
    major, minor = torch.cuda.get_device_capability()
    entries = [e for e in json.loads((kernel_dir / "manifest.json").read_text())["entries"]
               if e["arch"] == f"sm_{major}{minor}"]
    assert entries
    got = {}
    for e in entries:
        for k in e["kernels"]:
            mod, fn, static, dyn = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_int(-1), ctypes.c_int(-1)
            data = (kernel_dir / k["cubin"]).read_bytes()
            assert cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(data)) == 0, k["cubin"]
            assert cu.cuModuleGetFunction(ctypes.byref(fn), mod, k["function"].encode()) == 0
            assert cu.cuFuncGetAttribute(ctypes.byref(static), 1, fn) == 0  # SHARED_SIZE_BYTES
            assert cu.cuFuncGetAttribute(ctypes.byref(dyn), 8, fn) == 0     # MAX_DYNAMIC_SHARED_SIZE_BYTES
            cu.cuModuleUnload(mod)
            got[k["cubin"]] = (static.value, dyn.value)
    assert set(got.values()) == {(0, 48 * 1024)}, got


# ---- through the ORT CUDA op -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ort_cuda(kernel_dir):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider: install onnxruntime-gpu "
                    f"(docs/GPU.md); the capi tests above cover the same launcher")
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    from hla_deploy.native import PluginBuildError, ort_library_path
    os.environ["HLA_DEPLOY_KERNEL_DIR"] = str(kernel_dir)
    try:
        lib = ort_library_path(build=True)
    except PluginBuildError as e:
        pytest.fail(f"building the ORT op library failed: {e}")
    if b"libcudart.so" not in Path(lib).read_bytes():
        pytest.fail(f"{lib} was built without its CUDA kernels: rebuild with HLA_DEPLOY_WITH_CUDA=ON")
    sessions = {}

    def session(case, dtype_name):
        key = (case, dtype_name)
        if key not in sessions:
            from hla_deploy.native.ort_op_graph import single_node_model
            from hla_deploy.runtime.ort_session import cuda_provider_options
            variant, normalize, ridge, _ = case
            rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
            decay = _decay(case[3], H, rng)
            attrs = dict(variant=variant, decay=[1.0] if decay is None else [float(x) for x in decay],
                         normalize=int(normalize), eps=1e-6, ridge=float(ridge))
            model = single_node_model(dtype_name, cast_io=(dtype_name == "bfloat16"), **attrs)
            so = ort.SessionOptions()
            so.register_custom_ops_library(str(lib))
            so.log_severity_level = 2  # warnings: a missing kernel would show
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            providers = [("CUDAExecutionProvider", cuda_provider_options(0, tf32=False)), "CPUExecutionProvider"]
            sessions[key] = (ort.InferenceSession(model.SerializeToString(), so, providers=providers), attrs["decay"])
        return sessions[key]
    return session


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_ort_cuda_op_prefill_equals_triton_forward(ort_cuda, case, dtype_name, T):
    sess, decay = ort_cuda(case, dtype_name)
    tq, tk, tv, st, _ = _inputs(case, dtype_name, T, ("ort",))
    # numpy feeds: fp16 as is; bf16 through the graph's Cast of float32 values that are bf16 already (exact)
    feeds = [(x.cpu().numpy() if dtype_name != "bfloat16" else x.float().cpu().numpy()) for x in (tq, tk, tv)]
    o, s = sess.run(None, {"q": feeds[0], "k": feeds[1], "v": feeds[2], "state": st.cpu().numpy()})
    o_tr, s_tr = _triton(tq, tk, tv, st, case, None if decay == [1.0] else np.asarray(decay, np.float32))
    torch.cuda.synchronize()
    o_t = torch.from_numpy(np.asarray(o)).to(DT[dtype_name]).cuda()
    _assert_same(o_t, torch.from_numpy(s).cuda(), o_tr, s_tr, dtype_name, f"ORT {_case_id(case)} {dtype_name} T={T}")


# ---- through the TensorRT plugin's enqueue (mocked TensorRT) -----------------------------------------

def test_trt_plugin_enqueue_runs_the_aot_kernels(kernel_dir, tmp_path_factory):
    """hla_trt_plugin_test's GPU section with the kernel directory: its d = dv = 64 prefills
    (hla2 bf16 / fp16, ahla bf16, T = 130) take the AOT path and match hla::forward_cpu."""
    if shutil.which("nvcc") is None or shutil.which("cmake") is None:
        pytest.skip("nvcc or cmake not on PATH: the TensorRT plugin cannot be built")
    from hla_deploy.native import PluginBuildError, trt_build
    try:
        inc = trt_build.tensorrt_include_dir(fetch=True, verbose=False)
    except PluginBuildError as e:
        pytest.skip(f"TensorRT headers unavailable (carry .deps/kernel-lens-2.0.1 or set TENSORRT_INCLUDE_DIR): {e}")
    major, minor = torch.cuda.get_device_capability()
    bdir = tmp_path_factory.mktemp("trt-gpu")
    trt_build.cmake_build_trt(["hla_trt_plugin_test"], include_dir=inc, build_dir=bdir, with_cuda="ON",
                              cuda_architectures=f"{major}{minor}", verbose=False)
    proc = subprocess.run([str(bdir / "bin" / "hla_trt_plugin_test")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HLA_DEPLOY_KERNEL_DIR=str(kernel_dir)))
    print(proc.stdout)
    assert proc.returncode == 0 and ", 0 failures" in proc.stdout, proc.stdout[-4000:]
    aot_lines = [ln for ln in proc.stdout.splitlines() if "T=130 d=64" in ln]
    assert len(aot_lines) == 3 and all("path=aot" in ln for ln in aot_lines), aot_lines
