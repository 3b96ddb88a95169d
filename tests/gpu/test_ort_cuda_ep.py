"""hla_deploy::HLARecurrentStep inside onnxruntime-gpu's CUDA execution provider (issue 12).

Needs onnxruntime with the CUDAExecutionProvider (onnxruntime-gpu; see docs/GPU.md and
tests/gpu/run_all.sh) and the op library built with its CUDA kernels
(`HLA_DEPLOY_WITH_CUDA=ON hla-deploy build-plugins`). Skipped, with the reason, anywhere else.

- op level: a one-node graph (hla_deploy.native.ort_op_graph) for all 14 variant/option
  configurations, float32 / float16 / bfloat16, decode (T = 1) and prefill (T > 1), plain
  `InferenceSession.run` with numpy feeds and IOBinding with CUDA OrtValues, each against the
  float64 serial reference (tests/reference.py); the sessions list the CUDA EP alone with CPU-EP
  fallback disabled (listing the CPU EP too is refused by onnxruntime-gpu >= 1.31), and ORT's
  profile confirms every node ran in the CUDA EP (test_no_node_runs_on_the_cpu_ep);
- model level: OrtHLASession(device="cuda", tf32=False) vs the CPU EP and the torch model;
  several sessions in one process (CPU then CUDA, two CUDA sessions, concurrent runs from
  threads), torch imported and its CUDA context live in the same process;
- the segfault of issue 12 (torch imported, export, CPU-EP session with the library, then a
  CUDA-EP session, plain run) and its neighbours, each in a fresh subprocess with faulthandler,
  so a crash is reported with its Python stack and the CUDA libraries the process had loaded
  instead of killing pytest; and the exact parity sequence that ended silently on the H200
  (torch + Triton + ort-cpu, then ort-cuda, one process) under tests/gpu/proc_probe.py, failing
  on a signal or an end without Python's shutdown. tests/gpu/diagnose_ort_cuda.py runs the
  neighbours of that sequence side by side (one GPU call) when it fails.

Run: tests/gpu/run_all.sh, or  python -m pytest -q -rs tests/gpu/test_ort_cuda_ep.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu (docs/GPU.md)",
                allow_module_level=True)
if hasattr(ort, "preload_dlls"):  # CUDA / cuDNN from the nvidia-* wheels torch uses (ORT's advice)
    ort.preload_dlls()

import torch  # noqa: E402  (imported in the same process on purpose: issue 12)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from reference import ref_hla, ref_state_size  # noqa: E402

from hla_deploy.native.ort_op_graph import single_node_model  # noqa: E402
from hla_deploy.runtime.ort_session import cuda_provider_options  # noqa: E402

BOUNDS = {"float32": 5e-6, "float16": 5e-4, "bfloat16": 4e-3}  # o, relative RMS (as tests/gpu/test_cuda_kernels)
STATE_BOUND = 5e-6
# A prefill (T > 1) of hla2 / ahla runs the AOT Triton kernels when a kernel directory has the
# configuration (`hla-deploy build-plugins` builds d = dv = 64 by default): those are held to the
# Triton forward's bounds (tests/test_triton_hla.py; o and state, relative RMS) and checked bit for
# bit against it in tests/gpu/test_aot_prefill.py.
AOT_BOUNDS = {"float32": 1e-5, "float16": 3e-3, "bfloat16": 2e-2}


def _bounds(case, shape, dtype):
    """(o bound, state bound) for a case: the token-serial kernel's, or the AOT kernels' where they may run."""
    if case[0] in ("hla2", "ahla") and shape[1] > 1:
        return max(BOUNDS[dtype], AOT_BOUNDS[dtype]), max(STATE_BOUND, AOT_BOUNDS[dtype])
    return BOUNDS[dtype], STATE_BOUND

# the 14 variant / option configurations: (variant, normalize, ridge, decay per head or one value)
CASES = ([("hla2", n, r, dec) for n in (0, 1) for r in (0.0, 0.25) for dec in ([1.0], [0.95, 0.8, 0.99])]
         + [("ahla", n, 0.0, dec) for n in (0, 1) for dec in ([1.0], [0.9, 0.8, 0.95])]
         + [("hla3", n, 0.0, [1.0]) for n in (0, 1)])
SHAPES = [(2, 1, 3, 16, 8), (2, 7, 3, 16, 8), (1, 130, 3, 64, 64)]  # B, T, H, d, dv: decode, prefill


def _cid(c):
    return f"{c[0]}-norm{c[1]}-ridge{c[2]}-decay{'x'.join(str(x) for x in c[3])}"


def rel_rms(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(scope="module")
def cuda_library(ort_library):
    """The op library, which must hold the CUDA kernels (linked against libcudart)."""
    data = Path(ort_library).read_bytes()
    if b"libcudart.so" not in data:
        pytest.fail(f"{ort_library} was built without its CUDA kernels (no libcudart dependency): "
                    f"rebuild with HLA_DEPLOY_WITH_CUDA=ON (tests/gpu/run_all.sh does)")
    return ort_library


def _session(model, library, device="cuda", profile_dir=None):
    """A session of ``model`` with the op library. device "cuda": the CUDA EP ONLY, with CPU-EP
    fallback disabled (``session.disable_cpu_ep_fallback`` = "1"), so session creation fails if
    any node would run on the CPU. The CPU EP must not be listed then: onnxruntime-gpu >= 1.31
    refuses the pair ("Conflicting session configuration: explicitly added the CPU EP to the
    session, but also disabled fallback to the CPU EP"; 255 failures on the H200, issue 19)."""
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(library))
    so.log_severity_level = 3
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / "ort_profile")
    if device == "cuda":
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # the node must run on CUDA
        providers = [("CUDAExecutionProvider", cuda_provider_options(0, tf32=False))]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(model.SerializeToString(), so, providers=providers)


def _node_providers(profile_path):
    """{(op type, execution provider)} of every node the profiled runs executed."""
    import json
    events = json.loads(Path(profile_path).read_text())
    return {(e["args"].get("op_name"), e["args"]["provider"]) for e in events
            if e.get("cat") == "Node" and "provider" in e.get("args", {})}


def _case_inputs(case, shape, dtype, seed):
    variant, normalize, ridge, decay = case
    B, T, H, d, dv = shape
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, T, H, n)) * 0.3 for n in (d, d, dv))
    if normalize:
        q, k = np.abs(q) + 0.05, np.abs(k) + 0.05
    if variant == "hla3":
        q, k = q * 0.5, k * 0.5
    if dtype == "float16":
        feeds = [x.astype(np.float16) for x in (q, k, v)]
        exact = [x.astype(np.float64) for x in feeds]
    else:
        feeds = [x.astype(np.float32) for x in (q, k, v)]
        exact = [x.astype(np.float64) for x in feeds]
        if dtype == "bfloat16":  # the graph casts float32 -> bfloat16 (round to nearest even)
            exact = [torch.from_numpy(x).to(torch.bfloat16).double().numpy() for x in feeds]
    N = ref_state_size(variant, d, dv, bool(normalize), ridge)
    # a reachable state: the reference's after 3 tokens
    w = [np.abs(rng.standard_normal((B, 3, H, n))) * 0.3 + (0.05 if normalize else 0) for n in (d, d, dv)]
    _, s0 = ref_hla(*(torch.from_numpy(x) for x in w), variant, decay if len(decay) > 1 else decay[0],
                    bool(normalize), 1e-6, ridge)
    state = s0.numpy().astype(np.float32)
    assert state.shape == (B, H, N)
    return feeds, exact, state


def _reference(case, exact, state):
    variant, normalize, ridge, decay = case
    o, s = ref_hla(*(torch.from_numpy(x) for x in exact), variant, decay if len(decay) > 1 else decay[0],
                   bool(normalize), 1e-6, ridge, initial_state=torch.from_numpy(state.astype(np.float64)))
    return o.numpy(), s.numpy()


def _model(case, dtype):
    variant, normalize, ridge, decay = case
    attrs = dict(variant=variant, decay=[float(x) for x in decay], normalize=int(normalize), eps=1e-6,
                 ridge=float(ridge))
    return single_node_model(dtype, cast_io=(dtype == "bfloat16"), **attrs)


def _run_iobinding(sess, feeds, state):
    """q, k, v, state as CUDA OrtValues; o and state_out allocated by ORT on the GPU."""
    io = sess.io_binding()
    for name, x in zip(("q", "k", "v", "state"), (*feeds, state)):
        io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), "cuda", 0))
    io.bind_output("o", "cuda", 0)
    io.bind_output("state_out", "cuda", 0)
    sess.run_with_iobinding(io)
    o, s = io.get_outputs()
    assert o.device_name() == "cuda" and s.device_name() == "cuda"
    return o.numpy(), s.numpy()


@pytest.mark.parametrize("binding", ["run", "iobinding"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}H{}d{}dv{}".format(*s))
@pytest.mark.parametrize("case", CASES, ids=_cid)
def test_op_in_cuda_ep_matches_float64(cuda_library, case, shape, dtype, binding):
    seed = zlib.crc32(repr((case, shape, dtype)).encode())
    feeds, exact, state = _case_inputs(case, shape, dtype, seed)
    sess = _session(_model(case, dtype), cuda_library)
    assert sess.get_providers()[0] == "CUDAExecutionProvider", sess.get_providers()
    if binding == "run":
        o, s = sess.run(None, {"q": feeds[0], "k": feeds[1], "v": feeds[2], "state": state})
    else:
        o, s = _run_iobinding(sess, feeds, state)
    o_ref, s_ref = _reference(case, exact, state)
    assert s.dtype == np.float32 and s.shape == state.shape
    assert np.isfinite(o.astype(np.float64)).all() and np.isfinite(s).all()
    o_bound, s_bound = _bounds(case, shape, dtype)
    assert rel_rms(o, o_ref) <= o_bound, rel_rms(o, o_ref)
    assert rel_rms(s, s_ref) <= s_bound, rel_rms(s, s_ref)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_no_node_runs_on_the_cpu_ep(cuda_library, dtype, tmp_path):
    """The check behind disable_cpu_ep_fallback, made explicit: ORT's profile of a run names the
    provider of every node; all are the CUDA EP (bfloat16: the graph's Cast nodes too)."""
    case = CASES[7]
    feeds, _, state = _case_inputs(case, (2, 7, 3, 16, 8), dtype, 3)
    sess = _session(_model(case, dtype), cuda_library, profile_dir=tmp_path)
    # (ORT may still list its implicit CPU EP here; the profile below says where nodes ran)
    assert sess.get_providers()[0] == "CUDAExecutionProvider", sess.get_providers()
    sess.run(None, {"q": feeds[0], "k": feeds[1], "v": feeds[2], "state": state})
    nodes = _node_providers(sess.end_profiling())
    assert ("HLARecurrentStep", "CUDAExecutionProvider") in nodes, nodes
    assert {p for _, p in nodes} == {"CUDAExecutionProvider"}, f"nodes on another EP: {sorted(nodes)}"


@pytest.mark.parametrize("case", [CASES[7], CASES[11], CASES[13]], ids=_cid)
def test_op_prefill_then_decode_equals_cpu_ep(cuda_library, case):
    """Prefill 9 tokens then 5 decode steps, state fed back, CUDA EP vs CPU EP (same library)."""
    feeds, _, state = _case_inputs(case, (2, 14, 3, 16, 8), "float32", 5)
    model = _model(case, "float32")
    outs = {}
    for dev in ("cpu", "cuda"):
        sess = _session(model, cuda_library, dev)
        st, os_ = state, []
        for t0, t1 in [(0, 9)] + [(t, t + 1) for t in range(9, 14)]:
            o, st = sess.run(None, {"q": feeds[0][:, t0:t1], "k": feeds[1][:, t0:t1], "v": feeds[2][:, t0:t1],
                                    "state": st})
            os_.append(o)
        outs[dev] = (np.concatenate(os_, 1), st)
    assert rel_rms(outs["cuda"][0], outs["cpu"][0]) <= 1e-5
    assert rel_rms(outs["cuda"][1], outs["cpu"][1]) <= 1e-5


# ---- model level: OrtHLASession ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    """The shipped demo checkpoint exported with the custom op (float32)."""
    from hla_deploy.exporters import export_onnx
    from hla_deploy.models import default_checkpoint
    return export_onnx(default_checkpoint(), None, tmp_path_factory.mktemp("cuda_ep") / "demo.onnx", op="custom")


def _prompt(n=64, B=1, seed=0):
    return np.random.default_rng(seed).integers(32, 127, (B, n)).astype(np.int64)


def _decode(sess, ids, steps):
    sess.reset(ids.shape[0])
    out = [sess.prefill(ids[:, :-steps])[:, -1]]
    out += [sess.step(ids[:, t]) for t in range(ids.shape[1] - steps, ids.shape[1])]
    return np.stack(out, 1), sess.get_state()


def test_session_tf32_off_matches_cpu_ep(demo_onnx, cuda_library):
    """CPU session first, then CUDA (the order of issue 12's segfault), IOBinding path and plain
    run; TF32 off: logits within 1e-5 relative RMS (issue 12 measured 5.7e-7; 9.1e-4 with TF32)."""
    from hla_deploy.runtime import OrtHLASession
    cpu = OrtHLASession(demo_onnx, device="cpu", library=cuda_library)
    gpu = OrtHLASession(demo_onnx, device="cuda", library=cuda_library, tf32=False)
    ids = _prompt(64 + 16, B=2)
    a, sa = _decode(cpu, ids, 16)
    b, sb = _decode(gpu, ids, 16)
    assert rel_rms(b, a) <= 1e-5, rel_rms(b, a)
    assert rel_rms(sb, sa) <= 1e-5, rel_rms(sb, sa)
    la, s1 = cpu.run(ids[:, :64])
    lb, s2 = gpu.run(ids[:, :64])  # plain InferenceSession.run, numpy feeds
    assert rel_rms(lb, la) <= 1e-5 and rel_rms(s2, s1) <= 1e-5


def test_session_tf32_on_is_measurably_less_exact(demo_onnx, cuda_library):
    """The switch does something: with TF32 the logits move (issue 12: 9.1e-4), yet stay close."""
    from hla_deploy.runtime import OrtHLASession
    ids = _prompt(64)
    exact, _ = OrtHLASession(demo_onnx, device="cpu", library=cuda_library).run(ids)
    fast, _ = OrtHLASession(demo_onnx, device="cuda", library=cuda_library, tf32=True).run(ids)
    off, _ = OrtHLASession(demo_onnx, device="cuda", library=cuda_library, tf32=False).run(ids)
    err_on, err_off = rel_rms(fast, exact), rel_rms(off, exact)
    print(f"\nlogits vs CPU EP: tf32 on {err_on:.2e}, off {err_off:.2e}")
    assert err_off <= 1e-5 and err_on <= 1e-2
    assert err_on > err_off  # on an Ampere-or-newer GPU TF32 MatMul rounds (H200: 9.1e-4)


def test_session_matches_torch_model(demo_onnx, cuda_library):
    from hla_deploy.models import HLALanguageModel, default_checkpoint
    from hla_deploy.runtime import OrtHLASession
    model = HLALanguageModel.load(default_checkpoint()).eval()
    ids = _prompt(48)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(ids), None)                   # logits [B, T, V]
    ref = ref.float().numpy()
    got, _ = OrtHLASession(demo_onnx, device="cuda", library=cuda_library).run(ids)
    assert rel_rms(got, ref) <= 1e-5, rel_rms(got, ref)


def test_two_cuda_sessions_and_concurrent_runs(demo_onnx, cuda_library):
    """Two CUDA sessions of one model in one process, then 4 threads running one session's
    stateless run at once: every result equals the single-threaded one."""
    from hla_deploy.runtime import OrtHLASession
    s1 = OrtHLASession(demo_onnx, device="cuda", library=cuda_library)
    s2 = OrtHLASession(demo_onnx, device="cuda", library=cuda_library)
    prompts = [_prompt(40, seed=i) for i in range(4)]
    want = [s1.run(p) for p in prompts]
    for p, (lw, sw) in zip(prompts, want):
        l2, st2 = s2.run(p)
        assert rel_rms(l2, lw) <= 1e-6 and rel_rms(st2, sw) <= 1e-6
    got, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(3):
                got[i] = s1.run(prompts[i])
        except Exception as e:  # reported below, not lost in the thread
            errors.append(repr(e))
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (lg, sg), (lw, sw) in zip(got, want):
        assert rel_rms(lg, lw) <= 1e-6 and rel_rms(sg, sw) <= 1e-6


def test_torch_cuda_context_live_in_the_same_process(demo_onnx, cuda_library):
    """torch holds CUDA memory and a stream busy while the CUDA-EP session runs."""
    from hla_deploy.runtime import OrtHLASession
    x = torch.randn(2048, 2048, device="cuda")
    y = x @ x  # noqa: F841  (torch's context, cuBLAS handle and allocator in use)
    sess = OrtHLASession(demo_onnx, device="cuda", library=cuda_library)
    cpu = OrtHLASession(demo_onnx, device="cpu", library=cuda_library)
    ids = _prompt(32)
    assert rel_rms(sess.run(ids)[0], cpu.run(ids)[0]) <= 1e-5
    torch.cuda.synchronize()


# ---- the segfault of issue 12, each scenario in a fresh process ---------------------------------------

_SCENARIO = textwrap.dedent(r'''
    import faulthandler, os, sys
    faulthandler.enable()
    import numpy as np
    mode, library, onnx_path = sys.argv[1], sys.argv[2], sys.argv[3]
    state_shape = tuple(int(x) for x in sys.argv[4].split(","))  # [L, 1, H, N]: no hla_deploy.ops (torch)
    if "torch" in mode:
        import torch
    import onnxruntime as ort
    if "preload" in mode:
        ort.preload_dlls()
    if hasattr(ort, "print_debug_info"):
        ort.print_debug_info()  # onnxruntime-gpu: CUDA / cuDNN versions it was built with and found
    if "export" in mode:
        from hla_deploy.exporters import export_onnx
        from hla_deploy.models import default_checkpoint
        onnx_path = str(export_onnx(default_checkpoint(), None, onnx_path, op="custom"))

    def cuda_libs():
        libs = set()
        for line in open("/proc/self/maps"):
            p = line.split()[-1]
            if any(s in p for s in ("libcudart", "libcublas", "libcudnn.so", "libcuda.so", "providers_cuda")):
                libs.add(p)
        return sorted(libs)

    def session(device):
        so = ort.SessionOptions()
        so.register_custom_ops_library(library)
        so.log_severity_level = 3
        prov = ([("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"}), "CPUExecutionProvider"]
                if device == "cuda" else ["CPUExecutionProvider"])
        return ort.InferenceSession(onnx_path, so, providers=prov)

    order = ["cuda", "cpu"] if "cuda_first" in mode else ["cpu", "cuda"]
    ids = np.random.default_rng(0).integers(32, 127, (1, 64)).astype(np.int64)
    out = {}
    for dev in order:
        s = session(dev)
        state = np.zeros(state_shape, np.float32)
        print(f"[{mode}] {dev} session ready; CUDA libraries loaded: {cuda_libs()}", file=sys.stderr, flush=True)
        out[dev] = s.run(None, {"input_ids": ids, "state": state})  # plain run, numpy feeds
        print(f"[{mode}] {dev} run done", file=sys.stderr, flush=True)
    a, b = out["cpu"][0].astype(np.float64), out["cuda"][0].astype(np.float64)
    err = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    print(f"REL_RMS {err:.3e}")
    print(f"torch imported: {'torch' in sys.modules}", file=sys.stderr)
    sys.exit(0 if err <= 1e-5 else 3)
''')


def _native_backtrace(args, env) -> str:
    """The crashing thread's native stack (gdb, when installed), to name the library at fault."""
    import shutil
    if shutil.which("gdb") is None:
        return "\n(gdb not installed: no native backtrace; run the scenario under compute-sanitizer or gdb)"
    try:
        g = subprocess.run(["gdb", "-q", "-batch", "-ex", "run", "-ex", "bt 40", "-ex", "info sharedlibrary",
                            "--args", *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "\n(gdb timed out)"
    return f"\n--- gdb backtrace ---\n{g.stdout[-8000:]}"


@pytest.mark.parametrize("mode", [
    "torch+export",              # issue 12: import torch, export, CPU-EP then CUDA-EP, plain run
    "torch+export+preload",      # the same with onnxruntime.preload_dlls() first
    "torch",                     # torch imported, the model exported by the parent
    "plain",                     # no torch: CPU then CUDA
    "plain+cuda_first",          # no torch: CUDA then CPU
    "torch+cuda_first",
])
def test_sessions_in_a_fresh_process(mode, demo_onnx, cuda_library, tmp_path):
    from hla_deploy.runtime import OrtHLASession
    shape = OrtHLASession(demo_onnx, device="cpu", library=cuda_library).state_shape(1)
    path = tmp_path / "m.onnx" if "export" in mode else demo_onnx
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-X", "faulthandler", "-c", _SCENARIO, mode, str(cuda_library), str(path),
            ",".join(map(str, shape))]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    report = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    if proc.returncode < 0 or "Segmentation fault" in proc.stderr:
        report += _native_backtrace(args, env)
    assert proc.returncode != -11 and "Segmentation fault" not in proc.stderr, \
        f"scenario {mode!r} crashed (SIGSEGV){report}"
    assert proc.returncode == 0, f"scenario {mode!r} exited {proc.returncode}{report}"
    assert "REL_RMS" in proc.stdout, report
    assert ("torch imported: True" in proc.stderr) == ("torch" in mode), report


# ---- the exact sequence that ended silently (issue 19), in a fresh process --------------------------

PROBE = Path(__file__).resolve().parent / "proc_probe.py"
PARITY_SEQUENCE = ["parity", "hla_deploy/checkpoints/tiny-pystdlib",
                   "--backends", "torch,triton,ort-cpu,ort-cuda,onnx-standard", "--decode-steps", "32"]


def _ended(proc) -> str:
    """How a subprocess ended, in words (a negative return code is the signal that killed it)."""
    import signal
    if proc.returncode < 0:
        try:
            return f"killed by {signal.Signals(-proc.returncode).name}"
        except ValueError:
            return f"killed by signal {-proc.returncode}"
    return f"exit status {proc.returncode}"


def test_parity_sequence_in_one_process(cuda_library, tmp_path):
    """`hla-deploy parity tiny-pystdlib --backends torch,triton,ort-cpu,ort-cuda,onnx-standard
    --decode-steps 32`: torch, the Triton reference and backend on CUDA, the ORT CPU session, then
    the CUDA-EP session, one process. On the H200 (2026-12-01 and -02) the process ended right
    after the CUDA session was created: no ort-cuda line, no JSON, no error. Run through
    proc_probe.py (faulthandler for every thread, the CUDA libraries the process mapped, and an end
    marker that only Python's own shutdown prints), it fails on a signal, on an end without the
    marker (native exit()/_exit), on a non-zero status and on any backend that did not pass."""
    import json
    report = tmp_path / "parity.json"
    cmd = [sys.executable, "-X", "faulthandler", str(PROBE), "-m", "hla_deploy", *PARITY_SEQUENCE,
           "--json", str(report), "--library", str(cuda_library)]
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    out = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
    assert proc.returncode >= 0, f"the parity sequence was {_ended(proc)}{out}"
    assert "[proc_probe] END rc=" in proc.stderr, (
        f"the parity sequence ended ({_ended(proc)}) without Python's shutdown: native code called "
        f"exit()/_exit() or the process died before the end marker{out}")
    assert proc.returncode == 0, f"parity failed ({_ended(proc)}){out}"
    data = json.loads(report.read_text())
    status = {b["name"]: (b["status"], b["reason"]) for b in data["backends"]}
    assert all(s == "pass" for s, _ in status.values()), f"{status}{out}"
    assert data["reference"]["form"] == "triton", data["reference"]
