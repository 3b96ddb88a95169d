"""plugins/common CPU kernels (hla::forward_cpu through the ctypes test library) against two
independent float64 references: tests/reference.py `ref_hla` (torch, the paper's (S, C, m, G, h)
recurrence with the corrected decay) and a numpy loop of docs/OP_CONTRACT.md's compact step
(`ref_recurrent` below, also used by tests/gpu/test_cuda_kernels.py).

Builds plugins/common once per session with CMake into plugins/build-test/capi-cpu (CPU only).
Measured relative RMS errors (o / state), worst over the cases below: float32 3e-7 / 4e-7;
float16 2.1e-4 / 1.3e-7; bfloat16 1.7e-3 / 9e-8. The bounds leave 2.5x to 10x headroom.
"""
from __future__ import annotations

import importlib.util
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Relative RMS bounds (|o - ref| / |ref| over the whole tensor). fp16/bf16: the inputs are rounded
# to the dtype first and the reference uses the rounded values, so the bound covers float32
# accumulation plus one rounding of o to the dtype (2^-11 resp. 2^-8 relative, RMS ~ 1/3 of it).
BOUNDS = {"float32": 5e-6, "float16": 5e-4, "bfloat16": 4e-3}
STATE_BOUND = 5e-6


def load_capi_module():
    spec = importlib.util.spec_from_file_location("hla_capi", ROOT / "plugins" / "common" / "hla_capi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------
# float64 reference: the contract's recurrent step, token by token, vectorised over (B, H).
# ---------------------------------------------------------------------------------------------
def ref_parts(variant, d, dv, normalize, ridge):
    if variant == "hla2":
        parts = [("S", (d, d)), ("M", (d, dv))]
        if normalize:
            parts.append(("n", (d,)))
        if ridge != 0.0:
            parts.append(("C", (d, dv)))
            if normalize:
                parts.append(("m", (d,)))
    elif variant == "ahla":
        parts = [("P", (d, dv)), ("E", (d, dv))] + ([("mK", (d,)), ("n", (d,))] if normalize else [])
    else:
        parts = [("S", (d, d)), ("P", (d, dv)), ("F", (d, dv))] + (
            [("mK", (d,)), ("n", (d,))] if normalize else [])
    return parts


def ref_recurrent(q, k, v, state, variant="hla2", decay=1.0, normalize=False, eps=1e-6, ridge=0.0):
    """q, k [B,T,H,d], v [B,T,H,dv], state [B,H,N] (any float dtype) -> (o [B,T,H,dv], state) float64."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, H, d = q.shape
    dv = v.shape[-1]
    g = np.broadcast_to(np.asarray(decay, np.float64).reshape(-1), (H,))[None, :]  # [1, H]
    g1, g2 = g[..., None], g[..., None, None]  # broadcast over vectors / matrices
    st = np.asarray(state, np.float64).copy()
    X, off = {}, 0
    for name, shape in ref_parts(variant, d, dv, normalize, ridge):
        n = int(np.prod(shape))
        X[name] = st[..., off:off + n].reshape(B, H, *shape).copy()
        off += n
    assert off == st.shape[-1]
    o = np.zeros((B, T, H, dv))
    for t in range(T):
        qt, kt, vt = q[:, t], k[:, t], v[:, t]  # [B, H, d|dv]
        outer = lambda a, b: a[..., :, None] * b[..., None, :]
        if variant == "hla2":
            X["S"] = g2 * X["S"] + outer(kt, kt)
            u = np.einsum("bhij,bhj->bhi", X["S"], qt)
            X["M"] = g2 ** 2 * X["M"] + outer(u, vt)
            num = np.einsum("bhi,bhij->bhj", qt, X["M"])
            den = eps
            if "C" in X:
                X["C"] = g2 * X["C"] + outer(qt, vt)
                num = num + ridge * np.einsum("bhi,bhij->bhj", qt, X["C"])
            if normalize:
                X["n"] = g1 ** 2 * X["n"] + u
                den = np.einsum("bhi,bhi->bh", qt, X["n"]) + eps
                if "m" in X:
                    X["m"] = g1 * X["m"] + qt
                    den = den + ridge * np.einsum("bhi,bhi->bh", qt, X["m"])
        elif variant == "ahla":
            X["P"] = g2 * X["P"] + outer(kt, vt)
            X["E"] = g2 * X["E"] + outer(kt, np.einsum("bhi,bhij->bhj", qt, X["P"]))
            num = np.einsum("bhi,bhij->bhj", qt, X["E"])
            if normalize:
                X["mK"] = g1 * X["mK"] + kt
                X["n"] = g1 * X["n"] + kt * np.einsum("bhi,bhi->bh", qt, X["mK"])[..., None]
                den = np.einsum("bhi,bhi->bh", qt, X["n"]) + eps
        else:
            X["S"] = X["S"] + outer(kt, kt)
            X["P"] = X["P"] + outer(kt, vt)
            u = np.einsum("bhij,bhj->bhi", X["S"], qt)
            X["F"] = X["F"] + outer(u, np.einsum("bhi,bhij->bhj", qt, X["P"]))
            num = np.einsum("bhi,bhij->bhj", qt, X["F"])
            if normalize:
                X["mK"] = X["mK"] + kt
                X["n"] = X["n"] + u * np.einsum("bhi,bhi->bh", qt, X["mK"])[..., None]
                den = np.einsum("bhi,bhi->bh", qt, X["n"]) + eps
        o[:, t] = num / den[..., None] if normalize else num
    out_state = np.concatenate([X[name].reshape(B, H, -1) for name, _ in
                                ref_parts(variant, d, dv, normalize, ridge)], axis=-1)
    return o, out_state


def rel_rms(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-300))


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def to_dtype(x, dtype_name, torch_mod=None):
    """float64 array -> (array passed to the kernel, its exact values as float64)."""
    if dtype_name == "float32":
        a = x.astype(np.float32)
        return a, a.astype(np.float64)
    if dtype_name == "float16":
        a = x.astype(np.float16)
        return a, a.astype(np.float64)
    import torch  # bfloat16: round with torch, pass the raw bits as uint16
    t = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16).copy(), t.double().numpy()


def make_inputs(rng, B, T, H, d, dv, variant, normalize):
    if normalize:  # positive features keep the normalizer away from 0 (well-conditioned test)
        q = np.abs(rng.standard_normal((B, T, H, d))) / np.sqrt(d) + 0.05
        k = np.abs(rng.standard_normal((B, T, H, d))) / np.sqrt(d) + 0.05
    else:
        q = rng.standard_normal((B, T, H, d)) / np.sqrt(d)
        k = rng.standard_normal((B, T, H, d)) / np.sqrt(d)
    v = rng.standard_normal((B, T, H, dv))
    if variant == "hla3":  # third order grows like T^3: keep magnitudes moderate
        q, k = q * 0.5, k * 0.5
    return q, k, v


def random_state(rng, B, H, variant, d, dv, normalize, ridge, warm):
    """A valid state: zeros, or the float64 reference state after a few random tokens."""
    N = sum(int(np.prod(s)) for _, s in ref_parts(variant, d, dv, normalize, ridge))
    if not warm:
        return np.zeros((B, H, N), np.float32)
    q, k, v = make_inputs(rng, B, 3, H, d, dv, variant, normalize)
    _, st = ref_recurrent(q, k, v, np.zeros((B, H, N)), variant, 1.0, normalize, 1e-6, ridge)
    return st.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def capi():
    if shutil.which("cmake") is None or (shutil.which("c++") is None and shutil.which("g++") is None):
        pytest.skip("cmake or a C++ compiler is not installed: cannot build plugins/common")
    mod = load_capi_module()
    return mod.load(mod.build(cuda=False))


CASES = [
    # variant, normalize, ridge, per-head decay (None = 1.0)
    ("hla2", False, 0.0, None),
    ("hla2", False, 0.0, "per_head"),
    ("hla2", True, 0.0, "per_head"),
    ("hla2", False, 0.3, None),
    ("hla2", True, 0.3, "per_head"),
    ("hla2", True, 0.0, 0.9),
    ("ahla", False, 0.0, None),
    ("ahla", False, 0.0, "per_head"),
    ("ahla", True, 0.0, "per_head"),
    ("hla3", False, 0.0, None),
    ("hla3", True, 0.0, None),
]
SHAPES = [  # B, T, H, d, dv
    (1, 1, 1, 8, 8),
    (2, 2, 3, 16, 12),
    (1, 7, 2, 12, 20),
    (2, 64, 2, 16, 8),
    (1, 130, 2, 8, 16),
]


def _decay(spec, H, rng):
    if spec is None:
        return None
    if spec == "per_head":
        return rng.uniform(0.8, 1.0, size=H).astype(np.float32)
    return np.array([spec], np.float32)


def _case_id(c):
    return f"{c[0]}-norm{int(c[1])}-ridge{c[2]}-decay{c[3]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}H{}d{}dv{}".format(*s))
def test_fp32_matches_float64_reference(capi, case, shape):
    variant, normalize, ridge, dspec = case
    B, T, H, d, dv = shape
    rng = np.random.default_rng(zlib.crc32(repr((case, shape)).encode()))
    decay = _decay(dspec, H, rng)
    q, k, v = make_inputs(rng, B, T, H, d, dv, variant, normalize)
    st = random_state(rng, B, H, variant, d, dv, normalize, ridge, warm=T < 64)
    q32, k32, v32 = (x.astype(np.float32) for x in (q, k, v))
    o, st_out = capi.forward_cpu(q32, k32, v32, st, variant=variant, decay=decay,
                                 normalize=normalize, ridge=ridge)
    o_ref, st_ref = ref_recurrent(q32, k32, v32, st, variant, 1.0 if decay is None else decay,
                                  normalize, 1e-6, ridge)
    assert o.dtype == np.float32 and o.shape == (B, T, H, dv)
    assert rel_rms(o, o_ref) < BOUNDS["float32"], rel_rms(o, o_ref)
    assert rel_rms(st_out, st_ref) < STATE_BOUND, rel_rms(st_out, st_ref)
    # the independent torch float64 reference (tests/reference.py)
    import torch
    from reference import ref_hla
    o_t, st_t = ref_hla(*(torch.from_numpy(x) for x in (q32, k32, v32)), variant,
                        1.0 if decay is None else torch.from_numpy(decay.astype(np.float64)),
                        normalize, 1e-6, ridge, initial_state=torch.from_numpy(st))
    assert rel_rms(o, o_t.numpy()) < BOUNDS["float32"], rel_rms(o, o_t.numpy())
    assert rel_rms(st_out, st_t.numpy()) < STATE_BOUND, rel_rms(st_out, st_t.numpy())


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", [CASES[2], CASES[4], CASES[8], CASES[10], CASES[0]], ids=_case_id)
def test_half_dtypes_match_reference(capi, dtype_name, case):
    variant, normalize, ridge, dspec = case
    B, T, H, d, dv = 2, 33, 3, 16, 24
    rng = np.random.default_rng(7)
    decay = _decay(dspec, H, rng)
    q, k, v = make_inputs(rng, B, T, H, d, dv, variant, normalize)
    (qa, qx), (ka, kx), (va, vx) = (to_dtype(x, dtype_name) for x in (q, k, v))
    st = random_state(rng, B, H, variant, d, dv, normalize, ridge, warm=True)
    o, st_out = capi.forward_cpu(qa, ka, va, st, variant=variant, decay=decay, normalize=normalize,
                                 ridge=ridge, dtype_name=dtype_name)
    o_ref, st_ref = ref_recurrent(qx, kx, vx, st, variant, 1.0 if decay is None else decay,
                                  normalize, 1e-6, ridge)
    assert st_out.dtype == np.float32
    o64 = capi.convert(dtype_name, True, o).astype(np.float64) if dtype_name == "bfloat16" \
        else o.astype(np.float64)
    assert rel_rms(o64, o_ref) < BOUNDS[dtype_name], rel_rms(o64, o_ref)
    # The state is float32 and sees exactly the rounded inputs: float32 accuracy.
    assert rel_rms(st_out, st_ref) < STATE_BOUND


@pytest.mark.parametrize("case", [CASES[4], CASES[8], CASES[10]], ids=_case_id)
def test_prefill_then_steps_equals_one_prefill(capi, case):
    variant, normalize, ridge, dspec = case
    B, T, H, d, dv = 2, 20, 2, 8, 12
    rng = np.random.default_rng(3)
    decay = _decay(dspec, H, rng)
    q, k, v = (x.astype(np.float32) for x in make_inputs(rng, B, T, H, d, dv, variant, normalize))
    N = capi.state_size(variant, d, dv, normalize, ridge)
    kw = dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge)
    o_full, st_full = capi.forward_cpu(q, k, v, np.zeros((B, H, N), np.float32), **kw)
    T1 = 13
    o_a, st = capi.forward_cpu(q[:, :T1].copy(), k[:, :T1].copy(), v[:, :T1].copy(),
                               np.zeros((B, H, N), np.float32), **kw)
    outs = [o_a]
    for t in range(T1, T):
        o_t, st = capi.forward_cpu(q[:, t:t + 1].copy(), k[:, t:t + 1].copy(),
                                   v[:, t:t + 1].copy(), st, **kw)
        outs.append(o_t)
    # Same operations in the same order: bitwise equal.
    np.testing.assert_array_equal(np.concatenate(outs, axis=1), o_full)
    np.testing.assert_array_equal(st, st_full)


@pytest.mark.parametrize("T", [1, 9])
def test_in_place_state_and_thread_counts(capi, T):
    B, H, d, dv = 3, 5, 16, 8
    rng = np.random.default_rng(11)
    decay = rng.uniform(0.85, 1.0, size=H).astype(np.float32)
    q, k, v = (x.astype(np.float32) for x in make_inputs(rng, B, T, H, d, dv, "hla2", True))
    st0 = random_state(rng, B, H, "hla2", d, dv, True, 0.2, warm=True)
    kw = dict(variant="hla2", decay=decay, normalize=True, ridge=0.2)
    o_ref, st_ref = capi.forward_cpu(q, k, v, st0, num_threads=1, **kw)
    st_inplace = st0.copy()
    o_ip, st_ret = capi.forward_cpu(q, k, v, st_inplace, state_out=st_inplace, num_threads=1, **kw)
    assert st_ret is st_inplace
    np.testing.assert_array_equal(o_ip, o_ref)
    np.testing.assert_array_equal(st_inplace, st_ref)
    for nt in (2, 0, 64):  # each head is computed by one thread in a fixed order: bitwise equal
        o_n, st_n = capi.forward_cpu(q, k, v, st0, num_threads=nt, **kw)
        np.testing.assert_array_equal(o_n, o_ref)
        np.testing.assert_array_equal(st_n, st_ref)
    # And the whole thing is right.
    o64, s64 = ref_recurrent(q, k, v, st0, "hla2", decay, True, 1e-6, 0.2)
    assert rel_rms(o_ref, o64) < BOUNDS["float32"]
    assert rel_rms(st_ref, s64) < STATE_BOUND


def test_worker_pool_bitwise_and_concurrent_callers(capi):
    """Enough work for the worker pool (>= 64K state-element updates per part): every thread count
    gives the same bits, also with several Python threads calling at once (ctypes releases the GIL;
    a caller that finds the pool busy runs on its own thread)."""
    from concurrent.futures import ThreadPoolExecutor
    B, T, H, d, dv = 4, 3, 8, 64, 48
    rng = np.random.default_rng(5)
    decay = rng.uniform(0.8, 1.0, size=H).astype(np.float32)
    q, k, v = (x.astype(np.float32) for x in make_inputs(rng, B, T, H, d, dv, "hla3", True))
    st = random_state(rng, B, H, "hla3", d, dv, True, 0.0, warm=True)
    assert B * H * T * st.shape[-1] >= 8 * 65536  # up to 8 parts
    o1, s1 = capi.forward_cpu(q, k, v, st, variant="hla3", normalize=True, num_threads=1)
    o_ref, st_ref = ref_recurrent(q, k, v, st, "hla3", 1.0, True)
    assert rel_rms(o1, o_ref) < BOUNDS["float32"]
    assert rel_rms(s1, st_ref) < STATE_BOUND
    for nt in (2, 3, 5, 8, 0):
        o_n, s_n = capi.forward_cpu(q, k, v, st, variant="hla3", normalize=True, num_threads=nt)
        np.testing.assert_array_equal(o_n, o1)
        np.testing.assert_array_equal(s_n, s1)
    # hla2 with per-head decay, concurrent callers with different thread counts
    q2, k2, v2 = (x.astype(np.float32) for x in make_inputs(rng, B, T, H, d, dv, "hla2", False))
    st2 = random_state(rng, B, H, "hla2", d, dv, False, 0.0, warm=True)
    o_a, s_a = capi.forward_cpu(q2, k2, v2, st2, variant="hla2", decay=decay, num_threads=1)

    def call(i):
        if i % 2:
            return capi.forward_cpu(q2, k2, v2, st2, variant="hla2", decay=decay, num_threads=4)
        return capi.forward_cpu(q, k, v, st, variant="hla3", normalize=True, num_threads=3)
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(call, range(16)))
    for i, (o_i, s_i) in enumerate(results):
        np.testing.assert_array_equal(o_i, o_a if i % 2 else o1)
        np.testing.assert_array_equal(s_i, s_a if i % 2 else s1)


def test_state_size_matches_python_layout(capi):
    import sys
    sys.path.insert(0, str(ROOT))
    from hla_deploy.ops.state import state_size
    for variant in ("hla2", "ahla", "hla3"):
        for normalize in (False, True):
            for ridge in ((0.0, 0.5) if variant == "hla2" else (0.0,)):
                for d, dv in ((64, 64), (16, 24), (7, 3)):
                    assert capi.state_size(variant, d, dv, normalize, ridge) == \
                        state_size(variant, d, dv, normalize, ridge)
    assert capi.state_size("hla2", 64, 64) == 8192
    assert capi.lib.hla_capi_parse_variant(b"ahla") == 1
    assert capi.lib.hla_capi_parse_variant(b"hla4") == -1
    assert capi.lib.hla_capi_parse_variant(b"HLA2") == -1


@pytest.mark.parametrize("args, expect", [
    (dict(variant=7), "attribute 'variant'"),
    (dict(B=0), "batch size B"),
    (dict(T=0), "sequence length T"),
    (dict(H=0), "number of heads H"),
    (dict(d=0), "head dim d"),
    (dict(dv=0), "value head dim dv"),
    (dict(decay=[0.9, 0.9]), "expected 1 value or exactly H values"),
    (dict(decay=[1.5]), "in (0, 1]"),
    (dict(decay=[0.0]), "in (0, 1]"),
    (dict(decay=[float("nan")]), "in (0, 1]"),
    (dict(decay=[1.0, 1.0, float("inf")]), "in (0, 1]"),
    (dict(variant="hla3", decay=[0.9]), "hla3 requires decay == 1.0"),
    (dict(ridge=-0.1), "attribute 'ridge': must be finite and >= 0"),
    (dict(variant="ahla", ridge=0.1), "must be 0 for variants ahla and hla3"),
    (dict(variant="hla3", ridge=0.1), "must be 0 for variants ahla and hla3"),
    (dict(eps=-1e-6), "attribute 'eps'"),
    (dict(eps=float("inf")), "attribute 'eps'"),
])
def test_validate_messages(capi, args, expect):
    base = dict(variant="hla2", B=2, T=3, H=3, d=8, dv=8, normalize=False, eps=1e-6, ridge=0.0,
                decay=None)
    base.update(args)
    msg = capi.validate(**base)
    assert msg is not None and expect in msg, msg
    # forward refuses the same parameters instead of running
    if isinstance(base["variant"], str):
        B, T, H, d, dv = (max(base[x], 1) for x in ("B", "T", "H", "d", "dv"))
        if all(base[x] >= 1 for x in ("B", "T", "H", "d", "dv")):
            q = np.zeros((B, T, H, d), np.float32)
            v = np.zeros((B, T, H, dv), np.float32)
            st = np.zeros((B, H, max(capi.state_size(base["variant"], d, dv, False, 0.0), 1)),
                          np.float32)
            with pytest.raises(ValueError, match="returned -1"):
                capi.forward_cpu(q, q, v, st, variant=base["variant"], decay=base["decay"],
                                 eps=base["eps"], ridge=base["ridge"])


@pytest.mark.parametrize("bad,expect", [
    (dict(state=np.zeros((2, 3, 8 * 8 + 8 * 4 + 1), np.float32)), "'state' has shape (2, 3, 97), expected (2, 3, 96)"),
    (dict(state=np.zeros((2, 3, 8 * 8), np.float32)), "'state' has shape (2, 3, 64), expected (2, 3, 96)"),
    (dict(state=np.zeros((1, 3, 96), np.float32)), "'state' has shape (1, 3, 96)"),
    (dict(k=np.zeros((2, 5, 3, 4), np.float32)), "'k' has shape (2, 5, 3, 4), expected q's shape (2, 5, 3, 8)"),
    (dict(v=np.zeros((2, 4, 3, 4), np.float32)), "'v' has shape (2, 4, 3, 4), expected (2, 5, 3, dv)"),
    (dict(k=np.zeros((2, 5, 3, 8), np.float16)), "'k' has dtype float16, expected float32"),
    (dict(o=np.zeros((2, 5, 3, 3), np.float32)), "'o' has shape (2, 5, 3, 3), expected (2, 5, 3, 4)"),
    (dict(state_out=np.zeros((2, 3, 95), np.float32)), "'state_out' has shape (2, 3, 95)"),
    (dict(dtype_name="float16"), "'q' has dtype float32, expected float16 for dtype_name='float16'"),
    (dict(q=np.zeros((2, 5, 3), np.float32)), "'q' must have rank 4"),
])
def test_forward_rejects_wrong_shapes_before_touching_memory(capi, bad, expect):
    """hla_capi_forward_cpu takes raw pointers: the wrapper must check every shape and dtype against
    q and N = state_size(...), or a wrong state size reads and writes out of bounds."""
    B, T, H, d, dv = 2, 5, 3, 8, 4
    args = dict(q=np.zeros((B, T, H, d), np.float32), k=np.zeros((B, T, H, d), np.float32),
                v=np.zeros((B, T, H, dv), np.float32), state=np.zeros((B, H, d * d + d * dv), np.float32))
    kw = {name: bad.pop(name) for name in list(bad) if name in args}
    args.update(kw)
    with pytest.raises((ValueError, TypeError)) as exc:
        capi.forward_cpu(args["q"], args["k"], args["v"], args["state"], variant="hla2", **bad)
    assert expect in str(exc.value), str(exc.value)


@pytest.mark.parametrize("B,T,H,d,dv", [
    (2**31 - 1, 2**31 - 1, 3, 8, 16),   # B*T*H itself overflows int64 (the check must not)
    (2**31 - 1, 2**31 - 1, 2**31 - 1, 1, 1),
    (2**31 - 1, 2**30, 8, 64, 64),
    (1, 2**31 - 1, 2**31 - 1, 2**20, 1),
])
def test_validate_rejects_sizes_beyond_64bit_indexing(capi, B, T, H, d, dv):
    msg = capi.validate("hla2", B, T, H, d, dv, True, 1e-4, 0.5, None)
    assert msg is not None and "overflow 64-bit indexing" in msg, msg


def test_state_size_is_minus_one_when_n_does_not_fit_int64(capi):
    M = 2**31 - 1
    # hla3 and hla2 with ridge: d^2 + 2 d dv (+ 2d) > 2^63 - 1 for d = dv = 2^31 - 1
    assert capi.state_size("hla3", M, M, True) == -1
    assert capi.state_size("hla3", M, M, False) == -1
    assert capi.state_size("hla2", M, M, True, 0.5) == -1
    # these fit: exact values
    assert capi.state_size("ahla", M, M, True) == 2 * M * M + 2 * M
    assert capi.state_size("hla2", M, M, False) == 2 * M * M
    assert capi.state_size("hla3", 2**30, 2**30, True) == 3 * 2**60 + 2**31


def test_validate_accepts_good_params(capi):
    assert capi.validate("hla2", 1, 1, 4, 64, 32, True, 1e-6, 0.5, [0.9, 0.95, 1.0, 0.5]) is None
    assert capi.validate("ahla", 2, 5, 1, 8, 8, True, 0.0, 0.0, [0.7]) is None
    assert capi.validate("hla3", 2, 5, 3, 8, 8, False, 1e-6, 0.0, [1.0, 1.0, 1.0]) is None


def test_dtype_conversion_matches_numpy_and_torch(capi):
    # every float16 bit pattern -> float32 (NaNs compared as NaN)
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    f = capi.convert("float16", True, bits)
    ref = bits.view(np.float16).astype(np.float32)
    assert np.array_equal(np.isnan(f), np.isnan(ref))
    assert np.array_equal(f[~np.isnan(ref)], ref[~np.isnan(ref)])
    # float32 -> float16, round to nearest even, incl. subnormals, overflow and halfway cases
    rng = np.random.default_rng(0)
    with np.errstate(invalid="ignore", over="ignore"):
        _check_float_to_half_and_bf16(capi, bits, rng)


def _check_float_to_half_and_bf16(capi, bits, rng):
    import torch
    x = np.concatenate([
        rng.standard_normal(20000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 20000),
        np.array([0.0, -0.0, 65504, 65519.99, 65520, -70000, 1e-8, 2.0 ** -25, 2.0 ** -24 * 1.5,
                  5.960464477539063e-08, 6.1e-5, np.inf, -np.inf], np.float32),
        (bits.view(np.float16).astype(np.float32)[:-2048] * np.float32(1 + 2 ** -11)),  # halfway-ish
    ]).astype(np.float32)
    x = x[~np.isnan(x)]
    h = capi.convert("float16", False, x)
    np.testing.assert_array_equal(h, x.astype(np.float16).view(np.uint16))
    assert (capi.convert("float16", False, np.array([np.nan], np.float32)).view(np.float16)[0]
            != capi.convert("float16", False, np.array([np.nan], np.float32)).view(np.float16)[0])
    # bfloat16 both ways against torch
    xb = torch.from_numpy(x).to(torch.bfloat16)
    np.testing.assert_array_equal(capi.convert("bfloat16", False, x),
                                  xb.view(torch.int16).numpy().view(np.uint16))
    bb = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    fb = capi.convert("bfloat16", True, bits)
    assert np.array_equal(np.isnan(fb), np.isnan(bb))
    assert np.array_equal(fb[~np.isnan(bb)], bb[~np.isnan(bb)])
