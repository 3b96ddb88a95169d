"""plugins/common CUDA kernels (hla::forward_cuda through the ctypes test library, torch CUDA
tensors) against the float64 references computed on the CPU (tests/reference.py `ref_hla` and the
contract-step loop `ref_recurrent` of tests/test_native_kernels.py).

Needs a CUDA GPU, nvcc and cmake: builds plugins/common with -DHLA_WITH_CUDA=ON once per session
into plugins/build-test/capi-cuda. Skipped (with the reason) anywhere else, e.g. in CI.
Run on the device machine:  python3 -m pytest tests/gpu/test_cuda_kernels.py -q
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # one skip with the reason, not one per parametrised case
    pytest.skip("no CUDA GPU (torch.cuda): the CUDA kernels run only on a GPU machine",
                allow_module_level=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from test_native_kernels import (BOUNDS, STATE_BOUND, _decay,  # noqa: E402
                                 make_inputs, random_state, ref_recurrent, rel_rms)
from test_native_kernels import _case_id as _cid  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (torch.cuda)")

DT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _TokenSerial:
    """The capi library with forward_cuda pinned to the token-serial kernel (aot=False: no
    workspace), which this file tests; the AOT prefill is tests/gpu/test_aot_prefill.py's."""

    def __init__(self, lib):
        self._lib = lib

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def forward_cuda(self, *args, **kw):
        kw.setdefault("aot", False)
        return self._lib.forward_cuda(*args, **kw)


@pytest.fixture(scope="module")
def capi(capi):  # noqa: F811  (overrides tests/gpu/conftest.py's, wrapping it)
    return _TokenSerial(capi)


# capi: tests/gpu/conftest.py


def run_cuda(capi, q, k, v, st, dtype_name, **kw):
    """numpy float64 q, k, v (rounded to dtype here), float32 state -> (o float64, state, q/k/v as
    the exact float64 values the kernel saw)."""
    dev = torch.device("cuda")
    tq, tk, tv = (torch.from_numpy(x).to(DT[dtype_name]) for x in (q, k, v))
    o, so = capi.forward_cuda(tq.to(dev), tk.to(dev), tv.to(dev), torch.from_numpy(st).to(dev), **kw)
    torch.cuda.synchronize()
    return (o.double().cpu().numpy(), so.cpu().numpy(),
            tuple(x.double().numpy() for x in (tq, tk, tv)))


CASES = [  # variant, normalize, ridge, decay ("per_head" | float | None)
    ("hla2", False, 0.0, None),
    ("hla2", False, 0.0, "per_head"),
    ("hla2", True, 0.0, "per_head"),
    ("hla2", True, 0.3, "per_head"),
    ("hla2", False, 0.3, 0.9),
    ("ahla", False, 0.0, "per_head"),
    ("ahla", True, 0.0, None),
    ("hla3", False, 0.0, None),
    ("hla3", True, 0.0, None),
]
SHAPES = [  # B, T, H, d, dv: decode, short/long prefill, d != dv, d % 4 != 0 (scalar path)
    (3, 1, 4, 64, 64),
    (2, 1, 3, 16, 24),
    (2, 7, 3, 64, 32),
    (1, 130, 2, 32, 48),
    (2, 5, 2, 6, 10),
    (1, 1, 2, 6, 10),
]




@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=_cid)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}H{}d{}dv{}".format(*s))
def test_cuda_matches_float64_reference(capi, case, shape, dtype_name):
    variant, normalize, ridge, dspec = case
    B, T, H, d, dv = shape
    rng = np.random.default_rng(zlib.crc32(repr((case, shape, dtype_name)).encode()))
    decay = _decay(dspec, H, rng)
    q, k, v = make_inputs(rng, B, T, H, d, dv, variant, normalize)
    st = random_state(rng, B, H, variant, d, dv, normalize, ridge, warm=True)
    o, so, (qx, kx, vx) = run_cuda(capi, q, k, v, st, dtype_name, variant=variant, decay=decay,
                                   normalize=normalize, ridge=ridge)
    g = 1.0 if decay is None else decay
    o_ref, st_ref = ref_recurrent(qx, kx, vx, st, variant, g, normalize, 1e-6, ridge)
    assert rel_rms(o, o_ref) < BOUNDS[dtype_name], rel_rms(o, o_ref)
    assert rel_rms(so, st_ref) < STATE_BOUND, rel_rms(so, st_ref)
    from reference import ref_hla
    o_t, st_t = ref_hla(*(torch.from_numpy(x) for x in (qx, kx, vx)), variant,
                        g if decay is None else torch.from_numpy(decay.astype(np.float64)),
                        normalize, 1e-6, ridge, initial_state=torch.from_numpy(st))
    assert rel_rms(o, o_t.numpy()) < BOUNDS[dtype_name]
    assert rel_rms(so, st_t.numpy()) < STATE_BOUND


@pytest.mark.parametrize("variant,d", [("hla3", 128), ("hla2", 192)])
def test_prefill_state_too_large_for_shared_memory_runs_in_global(capi, variant, d):
    """hla3 d=dv=128 fits the H200's 227 KB shared memory; hla2 d=dv=192 (288 KB) does not."""
    B, T, H = 1, 9, 2
    rng = np.random.default_rng(d)
    q, k, v = make_inputs(rng, B, T, H, d, d, variant, False)
    st = random_state(rng, B, H, variant, d, d, False, 0.0, warm=True)
    o, so, (qx, kx, vx) = run_cuda(capi, q, k, v, st, "float32", variant=variant)
    o_ref, st_ref = ref_recurrent(qx, kx, vx, st, variant)
    assert rel_rms(o, o_ref) < BOUNDS["float32"]
    assert rel_rms(so, st_ref) < STATE_BOUND


def test_prefill_then_decode_steps_and_in_place(capi):
    """Prefill 13 tokens (shared-memory path) then 7 in-place decode steps (global path) equals one
    prefill of 20 tokens, and the CPU kernel."""
    B, T, H, d, dv = 2, 20, 4, 64, 64
    rng = np.random.default_rng(1)
    decay = rng.uniform(0.85, 1.0, size=H).astype(np.float32)
    q, k, v = (torch.from_numpy(x.astype(np.float32)).cuda() for x in
               make_inputs(rng, B, T, H, d, dv, "hla2", True))
    N = capi.state_size("hla2", d, dv, True, 0.25)
    kw = dict(variant="hla2", decay=decay, normalize=True, ridge=0.25)
    zero = torch.zeros(B, H, N, device="cuda")
    o_full, st_full = capi.forward_cuda(q, k, v, zero, **kw)
    T1 = 13
    o_a, st = capi.forward_cuda(q[:, :T1].contiguous(), k[:, :T1].contiguous(),
                                v[:, :T1].contiguous(), zero, **kw)
    outs = [o_a]
    for t in range(T1, T):
        o_t, st_ret = capi.forward_cuda(q[:, t:t + 1].contiguous(), k[:, t:t + 1].contiguous(),
                                        v[:, t:t + 1].contiguous(), st, state_out=st, **kw)
        assert st_ret.data_ptr() == st.data_ptr()
        outs.append(o_t)
    torch.cuda.synchronize()
    o_steps = torch.cat(outs, dim=1)
    assert rel_rms(o_steps.cpu().numpy(), o_full.cpu().numpy()) < 1e-6
    assert rel_rms(st.cpu().numpy(), st_full.cpu().numpy()) < 1e-6
    o_ref, st_ref = ref_recurrent(q.cpu().numpy(), k.cpu().numpy(), v.cpu().numpy(),
                                  np.zeros((B, H, N), np.float32), "hla2", decay, True, 1e-6, 0.25)
    assert rel_rms(o_full.cpu().numpy(), o_ref) < BOUNDS["float32"]
    assert rel_rms(st_full.cpu().numpy(), st_ref) < STATE_BOUND


def test_decode_in_cuda_graph_and_misaligned_state(capi):
    """A decode step captured in a CUDA graph replays correctly; a state pointer that is not
    16-byte aligned takes the scalar path and gives the same result."""
    B, H, d, dv = 4, 8, 64, 64
    rng = np.random.default_rng(2)
    q, k, v = (torch.from_numpy(x.astype(np.float32)).cuda() for x in
               make_inputs(rng, B, 1, H, d, dv, "hla2", False))
    st0 = torch.from_numpy(random_state(rng, B, H, "hla2", d, dv, False, 0.0, True)).cuda()
    o_eager, st_eager = capi.forward_cuda(q, k, v, st0.clone(), variant="hla2", decay=[0.95])
    st = st0.clone()
    o = torch.empty_like(o_eager)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(graph, stream=s):
            capi.forward_cuda(q, k, v, st, variant="hla2", decay=[0.95], state_out=st, o=o)
    st.copy_(st0)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(o, o_eager) and torch.equal(st, st_eager)
    # misaligned: state at an offset of one float inside a bigger buffer
    buf = torch.zeros(st0.numel() + 1, device="cuda")
    mis = buf[1:].view_as(st0)
    mis.copy_(st0)
    assert mis.data_ptr() % 16 != 0
    o_mis, _ = capi.forward_cuda(q, k, v, mis, variant="hla2", decay=[0.95], state_out=mis)
    torch.cuda.synchronize()
    assert rel_rms(o_mis.cpu().numpy(), o_eager.cpu().numpy()) < 1e-6
    assert rel_rms(mis.cpu().numpy(), st_eager.cpu().numpy()) < 1e-6


def test_bad_params_return_codes(capi):
    q = torch.zeros(1, 1, 300, 8, device="cuda")
    st = torch.zeros(1, 300, capi.state_size("hla2", 8, 8), device="cuda")
    with pytest.raises(RuntimeError, match="returned -1"):
        capi.forward_cuda(q, q, q, st, variant="hla3", decay=[0.5])
    # per-head decay for more than kMaxHeads (256) heads is not supported by the CUDA kernel
    with pytest.raises(RuntimeError, match="returned 1"):  # cudaErrorInvalidValue
        capi.forward_cuda(q, q, q, st, variant="hla2", decay=np.full(300, 0.9, np.float32))
    o, _ = capi.forward_cuda(q, q, q, st, variant="hla2", decay=[0.9])  # one decay: fine
    torch.cuda.synchronize()
    assert torch.count_nonzero(o) == 0
