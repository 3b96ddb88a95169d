"""The chunked CUDA prefill (plugins/common/hla_cuda_chunk.cuh, hla::forward_cuda with a
workspace, T > 1) on a GPU: against the float64 contract-step reference (tests/test_native_kernels.py
`ref_recurrent`, on the inputs rounded to the activation dtype) AND against the token-serial CUDA
kernel (the same call without a workspace), every hla2 option and ahla, float32 / float16 /
bfloat16, T in {2, 63, 64, 65, 1000, 4100}, zero and warm initial state; prefill then decode;
CUDA-graph replay; in-place state; the path actually taken (hla_capi_cuda_prefill_chunked).

Needs a CUDA GPU, nvcc and cmake (builds plugins/common with -DHLA_WITH_CUDA=ON once per session
into plugins/build-test/capi-cuda). Skipped with the reason anywhere else, e.g. in CI; the same
kernels run on the CPU in tests/test_chunk_emulation.py (one thread per block, WMMA emulated).
Run on the device machine:  python3 -m pytest tests/gpu/test_cuda_chunked.py -q -rs
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # one skip with the reason, not one per parametrised case
    pytest.skip("no CUDA GPU (torch.cuda): the chunked CUDA prefill runs only on a GPU machine",
                allow_module_level=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from test_native_kernels import (BOUNDS, _decay, make_inputs,  # noqa: E402
                                 random_state, ref_recurrent, rel_rms)

DT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# State: float32 state kernels for every dtype; measured in the CPU emulation up to T = 4100:
# <= 2.1e-6 (normalize + decay), ~2e-7 otherwise. o: at most 1.5x its own final rounding.
STATE_BOUND = 1e-5
SERIAL_STATE_BOUND = 1e-5   # chunked vs token-serial (two float32 summation orders)

from test_chunk_emulation import CASES  # noqa: E402  (variant, normalize, ridge, decay)
TS = [2, 63, 64, 65, 1000, 4100]


# capi: tests/gpu/conftest.py


def _round(x: np.ndarray, dtype_name: str) -> np.ndarray:
    return torch.from_numpy(np.asarray(x, np.float32)).to(DT[dtype_name]).double().numpy()


def _case_id(c):
    return f"{c[0]}-norm{int(c[1])}-ridge{c[2]}-decay{c[3]}"


def _run(capi, qx, kx, vx, st, dtype_name, chunked, **kw):
    dev = torch.device("cuda")
    tq, tk, tv = (torch.from_numpy(x).to(DT[dtype_name]).to(dev) for x in (qx, kx, vx))
    o, so = capi.forward_cuda(tq, tk, tv, torch.from_numpy(st).to(dev), chunked=chunked, **kw)
    torch.cuda.synchronize()
    return o.double().cpu().numpy(), so.cpu().numpy()


@pytest.mark.parametrize("warm", [False, True], ids=["zero_state", "warm_state"])
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_chunked_matches_reference_and_serial_kernel(capi, case, dtype_name, T, warm):
    variant, normalize, ridge, dspec = case
    B, H, d, dv = 2, 3, 64, 64
    rng = np.random.default_rng(zlib.crc32(repr((case, dtype_name, T, warm)).encode()))
    decay = _decay(dspec, H, rng)
    assert capi.prefill_chunked(variant, B, T, H, d, dv, normalize, ridge, dtype_name)
    q, k, v = make_inputs(rng, B, T, H, d, dv, variant, normalize)
    qx, kx, vx = (_round(x, dtype_name) for x in (q, k, v))
    st = random_state(rng, B, H, variant, d, dv, normalize, ridge, warm=warm)
    kw = dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    o, so = _run(capi, qx, kx, vx, st, dtype_name, True, **kw)
    o_serial, so_serial = _run(capi, qx, kx, vx, st, dtype_name, False, **kw)
    o_ref, st_ref = ref_recurrent(qx, kx, vx, st, variant, 1.0 if decay is None else decay, normalize, 1e-6, ridge)
    assert np.isfinite(o).all() and np.isfinite(so).all()
    floor = rel_rms(_round(o_ref, dtype_name), o_ref)  # the output's own rounding
    err = rel_rms(o, o_ref)
    assert err < BOUNDS[dtype_name] and err < 1.5 * floor + 1e-6, (err, floor)
    assert rel_rms(so, st_ref) < STATE_BOUND, rel_rms(so, st_ref)
    assert rel_rms(o, o_serial) < max(2.0 * BOUNDS[dtype_name] if dtype_name != "float32" else 2e-6, 2e-6)
    assert rel_rms(so, so_serial) < SERIAL_STATE_BOUND


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", [(1, 65, 1, 16, 8), (3, 130, 2, 20, 36), (1, 200, 2, 128, 128),
                                   (2, 97, 4, 96, 48)], ids=lambda s: "B{}T{}H{}d{}dv{}".format(*s))
@pytest.mark.parametrize("case", [CASES[4], CASES[7]], ids=_case_id)
def test_head_dims_and_chunk_sizes(capi, case, shape, dtype_name):
    """d, dv not multiples of 16, d != dv, large heads (chunks of 32 / 16 tokens)."""
    variant, normalize, ridge, dspec = case
    B, T, H, d, dv = shape
    rng = np.random.default_rng(zlib.crc32(repr((case, shape, dtype_name)).encode()))
    decay = _decay(dspec, H, rng)
    plan = capi.chunk_plan(variant, B, T, H, d, dv, normalize, ridge, dtype_name)
    assert plan["ok"] and capi.prefill_chunked(variant, B, T, H, d, dv, normalize, ridge, dtype_name), plan
    q, k, v = make_inputs(rng, B, T, H, d, dv, variant, normalize)
    qx, kx, vx = (_round(x, dtype_name) for x in (q, k, v))
    st = random_state(rng, B, H, variant, d, dv, normalize, ridge, warm=True)
    o, so = _run(capi, qx, kx, vx, st, dtype_name, True, variant=variant, decay=decay, normalize=normalize,
                 ridge=ridge)
    o_ref, st_ref = ref_recurrent(qx, kx, vx, st, variant, decay, normalize, 1e-6, ridge)
    floor = rel_rms(_round(o_ref, dtype_name), o_ref)
    assert rel_rms(o, o_ref) < 1.5 * floor + 1e-6, (rel_rms(o, o_ref), floor, plan)
    assert rel_rms(so, st_ref) < STATE_BOUND


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("variant", ["hla2", "ahla"])
def test_prefill_then_decode_in_place(capi, variant, dtype_name):
    """Chunked prefill of 1000 tokens, then 20 in-place decode steps, equals one chunked prefill
    of 1020 tokens and the float64 reference."""
    B, H, d, dv, T1, T = 2, 4, 64, 64, 1000, 1020
    rng = np.random.default_rng(7)
    decay = rng.uniform(0.9, 1.0, size=H).astype(np.float32)
    normalize, ridge = True, (0.25 if variant == "hla2" else 0.0)
    q, k, v = make_inputs(rng, B, T, H, d, dv, variant, normalize)
    tq, tk, tv = (torch.from_numpy(x.astype(np.float32)).to(DT[dtype_name]).cuda() for x in (q, k, v))
    N = capi.state_size(variant, d, dv, normalize, ridge)
    kw = dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    zero = torch.zeros(B, H, N, device="cuda")
    o_full, st_full = capi.forward_cuda(tq, tk, tv, zero, **kw)
    st = zero.clone()
    o_a, _ = capi.forward_cuda(tq[:, :T1].contiguous(), tk[:, :T1].contiguous(), tv[:, :T1].contiguous(),
                               st, state_out=st, **kw)                  # in place
    outs = [o_a]
    for t in range(T1, T):
        o_t, _ = capi.forward_cuda(tq[:, t:t + 1].contiguous(), tk[:, t:t + 1].contiguous(),
                                   tv[:, t:t + 1].contiguous(), st, state_out=st, **kw)
        outs.append(o_t)
    torch.cuda.synchronize()
    o_steps = torch.cat(outs, dim=1).double().cpu().numpy()
    bound = {"float32": 2e-6, "float16": 1e-3, "bfloat16": 8e-3}[dtype_name]
    assert rel_rms(o_steps, o_full.double().cpu().numpy()) < bound
    assert rel_rms(st.cpu().numpy(), st_full.cpu().numpy()) < SERIAL_STATE_BOUND
    qx, kx, vx = (x.double().cpu().numpy() for x in (tq, tk, tv))
    o_ref, st_ref = ref_recurrent(qx, kx, vx, np.zeros((B, H, N)), variant, decay, normalize, 1e-6, ridge)
    assert rel_rms(o_steps, o_ref) < BOUNDS[dtype_name]
    assert rel_rms(st.cpu().numpy(), st_ref) < STATE_BOUND


def test_chunked_prefill_replays_from_a_cuda_graph(capi):
    B, T, H, d, dv = 1, 2048, 8, 64, 64
    rng = np.random.default_rng(3)
    q, k, v = (torch.from_numpy(x.astype(np.float32)).half().cuda() for x in
               make_inputs(rng, B, T, H, d, dv, "hla2", False))
    st0 = torch.from_numpy(random_state(rng, B, H, "hla2", d, dv, False, 0.0, True)).cuda()
    kw = dict(variant="hla2", decay=[0.95])
    o_eager, st_eager = capi.forward_cuda(q, k, v, st0.clone(), **kw)
    ws = torch.empty(capi.cuda_workspace_size("hla2", B, T, H, d, dv, dtype_name="float16"),
                     dtype=torch.uint8, device="cuda")
    st, o = st0.clone(), torch.empty_like(o_eager)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture (first call sets the smem attribute)
        capi.forward_cuda(q, k, v, st, state_out=st, o=o, workspace=ws, **kw)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(graph, stream=s):
            capi.forward_cuda(q, k, v, st, state_out=st, o=o, workspace=ws, **kw)
    st.copy_(st0)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(o, o_eager) and torch.equal(st, st_eager)  # deterministic: bit-identical


def test_paths_taken(capi):
    assert not capi.prefill_chunked("hla2", 1, 1, 8, 64, 64)            # decode: token-serial
    assert not capi.prefill_chunked("hla3", 1, 512, 8, 64, 64)          # hla3: token-serial
    assert capi.prefill_chunked("hla2", 1, 512, 8, 64, 64, dtype_name="float16")
    assert capi.prefill_chunked("ahla", 1, 512, 8, 64, 64, True, dtype_name="bfloat16")
    assert capi.cuda_workspace_size("hla2", 1, 1, 8, 64, 64) == 0
