"""ONNX Runtime custom op hla_deploy::HLARecurrentStep (plugins/ort_hla) on the CPU EP.

Parity: one-node graphs against the float64 serial reference (tests/reference.py ref_hla) for
every variant and option, random shapes (d != dv, T = 1 and T > 1, non-zero initial state,
state carried across calls). Bad input: each case must raise an ORT error whose message names
the tensor/attribute, and the process must go on working.

Bounds (relative RMS error vs float64, measured on these inputs; see the numbers in the asserts):
    float32 activations: o <= 2e-5, state <= 2e-6
    float16 activations: o <= 5e-4 (1.8e-4 .. 1.9e-4 measured: one rounding of o to fp16), state <= 2e-6
    bfloat16 activations: o <= 4e-3 (1.4e-3 .. 1.5e-3 measured: one rounding of o to bf16), state <= 2e-6
(the reference gets the same fp16/bf16-rounded inputs, so the state error is float32 accumulation).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import ref_hla, ref_state_size

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hla_deploy.native.ort_op_graph import single_node_model, single_node_session  # noqa: E402


@pytest.fixture(scope="module")
def lib(ort_library):
    """The ORT custom-op library (tests/conftest.py builds it once; a failed build fails)."""
    return ort_library


def rel_rms(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(b ** 2)) + 1e-30))


def _attrs(variant, decay, normalize, ridge, eps=1e-6):
    return dict(variant=variant, decay=[float(x) for x in decay], normalize=int(normalize), eps=eps,
                ridge=float(ridge))


def _inputs(rng, B, T, H, d, dv, normalize, dtype=np.float32):
    """q, k, v (rounded to dtype); positive q, k when normalize (keeps the normaliser away from 0)."""
    q, k, v = (rng.standard_normal((B, T, H, n)) * 0.3 for n in (d, d, dv))
    if normalize:
        q, k = np.abs(q), np.abs(k)
    return [x.astype(dtype) for x in (q, k, v)]


def _ref(q, k, v, variant, decay, normalize, ridge, state=None):
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    o, s = ref_hla(t(q), t(k), t(v), variant, decay if len(decay) > 1 else decay[0], bool(normalize),
                   1e-6, ridge, initial_state=None if state is None else t(state))
    return o.numpy(), s.numpy()


# (variant, decay per head or one value, normalize, ridge)
CASES = [
    ("hla2", [1.0], 0, 0.0),
    ("hla2", [0.9], 0, 0.0),
    ("hla2", [0.95, 0.8, 0.99], 1, 0.0),   # per-head decay, normalize
    ("hla2", [0.9], 0, 0.25),              # ridge
    ("hla2", [0.97, 0.9, 0.85], 1, 0.1),   # ridge + normalize + per-head decay
    ("ahla", [1.0], 0, 0.0),
    ("ahla", [0.9, 0.8, 0.95], 1, 0.0),
    ("hla3", [1.0], 0, 0.0),
    ("hla3", [1.0, 1.0, 1.0], 1, 0.0),
]


@pytest.mark.parametrize("variant,decay,normalize,ridge", CASES)
def test_parity_fp32_all_variants(lib, variant, decay, normalize, ridge):
    rng = np.random.default_rng(abs(hash((variant, tuple(decay), normalize, ridge))) % 2**32)
    H = 3
    sess = single_node_session(single_node_model("float32", **_attrs(variant, decay, normalize, ridge)), lib)
    for B, T, d, dv in [(2, 1, 8, 12), (1, 17, 16, 8), (3, 40, 12, 12)]:
        # a non-zero initial state: the reference state after a few random tokens
        q0, k0, v0 = _inputs(rng, B, 5, H, d, dv, normalize, np.float64)
        _, s0 = _ref(q0, k0, v0, variant, decay, normalize, ridge)
        s0 = s0.astype(np.float32)
        assert s0.shape == (B, H, ref_state_size(variant, d, dv, bool(normalize), ridge))
        q, k, v = _inputs(rng, B, T, H, d, dv, normalize)
        o, s = sess.run(None, {"q": q, "k": k, "v": v, "state": s0})
        ro, rs = _ref(q, k, v, variant, decay, normalize, ridge, s0)
        assert o.dtype == np.float32 and s.dtype == np.float32
        assert o.shape == (B, T, H, dv) and s.shape == s0.shape
        assert rel_rms(o, ro) <= 2e-5, (B, T, d, dv, rel_rms(o, ro))
        assert rel_rms(s, rs) <= 2e-6, (B, T, d, dv, rel_rms(s, rs))


@pytest.mark.parametrize("variant", ["hla2", "ahla", "hla3"])
def test_parity_random_shapes(lib, variant):
    """Random B, H, T, d, dv (seeded), random normalize / ridge / per-head decay where allowed."""
    rng = np.random.default_rng({"hla2": 21, "ahla": 22, "hla3": 23}[variant])
    for _ in range(6):
        B, H, T = (int(x) for x in (rng.integers(1, 4), rng.integers(1, 6), rng.integers(1, 34)))
        d, dv = (int(x) for x in rng.choice([1, 3, 8, 17, 32], size=2))
        normalize = int(rng.integers(0, 2))
        ridge = float(rng.choice([0.0, 0.3])) if variant == "hla2" else 0.0
        decay = [1.0] * H if variant == "hla3" else [float(x) for x in rng.uniform(0.8, 1.0, size=H)]
        sess = single_node_session(single_node_model("float32", **_attrs(variant, decay, normalize, ridge)), lib)
        q, k, v = _inputs(rng, B, T, H, d, dv, normalize)
        N = ref_state_size(variant, d, dv, bool(normalize), ridge)
        q0, k0, v0 = _inputs(rng, B, 4, H, d, dv, normalize, np.float64)
        s0 = _ref(q0, k0, v0, variant, decay, normalize, ridge)[1].astype(np.float32)  # a reachable state
        assert s0.shape == (B, H, N)
        o, s = sess.run(None, {"q": q, "k": k, "v": v, "state": s0})
        ro, rs = _ref(q, k, v, variant, decay, normalize, ridge, s0)
        shape = dict(B=B, H=H, T=T, d=d, dv=dv, normalize=normalize, ridge=ridge)
        assert rel_rms(o, ro) <= 2e-5, (shape, rel_rms(o, ro))
        assert rel_rms(s, rs) <= 2e-6, (shape, rel_rms(s, rs))


@pytest.mark.parametrize("variant,decay,normalize,ridge", [CASES[2], CASES[4], CASES[6], CASES[8]])
def test_state_carried_across_calls(lib, variant, decay, normalize, ridge):
    """prefill T1, then T = 1 steps, then T2 tokens, each from the previous state_out == one call."""
    rng = np.random.default_rng(7)
    B, H, d, dv = 2, 3, 8, 6
    sess = single_node_session(single_node_model("float32", **_attrs(variant, decay, normalize, ridge)), lib)
    q, k, v = _inputs(rng, B, 24, H, d, dv, normalize)
    state = np.zeros((B, H, ref_state_size(variant, d, dv, bool(normalize), ridge)), np.float32)
    outs = []
    for a, b in [(0, 9), (9, 10), (10, 11), (11, 12), (12, 24)]:
        o, state = sess.run(None, {"q": q[:, a:b], "k": k[:, a:b], "v": v[:, a:b], "state": state})
        outs.append(o)
    o_full, s_full = sess.run(None, {"q": q, "k": k, "v": v, "state": np.zeros_like(state)})
    ro, rs = _ref(q, k, v, variant, decay, normalize, ridge)
    o_pieces = np.concatenate(outs, axis=1)
    assert rel_rms(o_pieces, ro) <= 2e-5 and rel_rms(state, rs) <= 2e-6
    assert rel_rms(o_pieces, o_full) <= 2e-5 and rel_rms(state, s_full) <= 2e-6


def test_default_attributes_are_hla2_no_decay(lib):
    rng = np.random.default_rng(3)
    sess = single_node_session(single_node_model("float32"), lib)  # no attributes at all
    q, k, v = _inputs(rng, 1, 6, 2, 4, 5, False)
    o, s = sess.run(None, {"q": q, "k": k, "v": v, "state": np.zeros((1, 2, 16 + 20), np.float32)})
    ro, rs = _ref(q, k, v, "hla2", [1.0], 0, 0.0)
    assert rel_rms(o, ro) <= 2e-5 and rel_rms(s, rs) <= 2e-6


@pytest.mark.parametrize("dtype,o_bound", [("float16", 5e-4), ("bfloat16", 4e-3)])
@pytest.mark.parametrize("variant,decay,normalize,ridge", [CASES[2], CASES[4], CASES[6], CASES[8]])
def test_half_precision_activations(lib, dtype, o_bound, variant, decay, normalize, ridge):
    rng = np.random.default_rng(11)
    B, T, H, d, dv = 2, 20, 3, 16, 8
    attrs = _attrs(variant, decay, normalize, ridge)
    if dtype == "float16":
        sess = single_node_session(single_node_model("float16", **attrs), lib)
        q, k, v = _inputs(rng, B, T, H, d, dv, normalize, np.float16)
        qr, kr, vr = q, k, v
    else:  # numpy has no bfloat16: the graph casts float32 -> bfloat16 -> op -> float32
        sess = single_node_session(single_node_model("bfloat16", cast_io=True, **attrs), lib)
        q, k, v = _inputs(rng, B, T, H, d, dv, normalize)
        to_bf16 = lambda x: torch.from_numpy(x).to(torch.bfloat16).to(torch.float64).numpy()  # noqa: E731
        qr, kr, vr = to_bf16(q), to_bf16(k), to_bf16(v)  # what the op sees (round to nearest even)
    state = np.zeros((B, H, ref_state_size(variant, d, dv, bool(normalize), ridge)), np.float32)
    o, s = sess.run(None, {"q": q, "k": k, "v": v, "state": state})
    assert s.dtype == np.float32
    assert o.dtype == (np.float16 if dtype == "float16" else np.float32)
    ro, rs = _ref(qr, kr, vr, variant, decay, normalize, ridge)
    assert rel_rms(o, ro) <= o_bound, rel_rms(o, ro)
    assert rel_rms(s, rs) <= 2e-6, rel_rms(s, rs)
    assert rel_rms(o, ro) > 0  # really rounded (the test would not notice an fp32 output otherwise)


# ---- bad input ------------------------------------------------------------------------------------

def _good_feed(B=2, T=3, H=2, d=4, dv=6, N=None):
    rng = np.random.default_rng(0)
    q, k, v = _inputs(rng, B, T, H, d, dv, False)
    N = d * d + d * dv if N is None else N
    return {"q": q, "k": k, "v": v, "state": np.zeros((B, H, N), np.float32)}


def _expect_run_error(sess, feed, *fragments):
    with pytest.raises(Exception) as exc:
        sess.run(None, feed)
    msg = str(exc.value)
    for f in fragments:
        assert f in msg, f"expected {f!r} in the error message: {msg}"
    # the process is alive and the session still works on good input
    o, s = sess.run(None, _good_feed())
    assert np.isfinite(o).all() and o.shape == (2, 3, 2, 6)


@pytest.fixture(scope="module")
def hla2_sess(lib):
    # input shapes undeclared: ORT hands any rank/shape to the node, so the op's own checks run
    return single_node_session(single_node_model("float32", variant="hla2", declare_shapes=False), lib)


def test_bad_rank_caught_by_declared_graph_shapes(lib):
    sess = single_node_session(single_node_model("float32", variant="hla2"), lib)
    feed = _good_feed()
    with pytest.raises(Exception, match=r"rank for input: q Got: 3 Expected: 4"):
        sess.run(None, dict(feed, q=feed["q"][0]))


def test_bad_state_size(hla2_sess):
    _expect_run_error(hla2_sess, _good_feed(N=4 * 4 + 4 * 6 + 1), "input 'state' has last dim 41", "expected N = 40")


def test_bad_state_size_normalize_mismatch(lib):
    # a state laid out without the normaliser n, for a node with normalize=1
    sess = single_node_session(single_node_model("float32", variant="hla2", normalize=1), lib)
    with pytest.raises(Exception, match=r"input 'state' has last dim 40 .*expected N = 44"):
        sess.run(None, _good_feed())


def test_bad_ranks(hla2_sess):
    feed = _good_feed()
    _expect_run_error(hla2_sess, dict(feed, q=feed["q"][0]), "input 'q' has rank 3", "expected rank 4")
    _expect_run_error(hla2_sess, dict(feed, state=feed["state"][0]), "input 'state' has rank 2", "expected rank 3")
    _expect_run_error(hla2_sess, dict(feed, v=feed["v"][None]), "input 'v' has rank 5")


def test_bad_shapes(hla2_sess):
    feed = _good_feed()
    _expect_run_error(hla2_sess, dict(feed, k=feed["k"][..., :3]), "input 'k' has shape [2, 3, 2, 3]", "q's shape")
    _expect_run_error(hla2_sess, dict(feed, v=feed["v"][:1]), "input 'v' has shape [1, 3, 2, 6]")
    _expect_run_error(hla2_sess, dict(feed, state=feed["state"][:1]), "input 'state' has shape [1, 2, 40]", "B = 2")
    empty = {n: x[:, :0] for n, x in feed.items() if n != "state"}
    _expect_run_error(hla2_sess, dict(feed, **empty), "T = 0", "expected T >= 1")


def test_bad_dtypes_rejected_at_load(lib):
    cases = [(dict(dtype="float32", state_dtype="float16"), ["state", "float16"]),
             (dict(dtype="float64"), ["(q)", "double"]),
             # mixed activation dtypes: ORT's kernel lookup (one kernel per dtype) refuses the node
             (dict(dtype="float32", k_dtype="float16"), ["HLARecurrentStep", "no kernel def matches node inputs"])]
    for kw, fragments in cases:
        with pytest.raises(Exception) as exc:
            single_node_session(single_node_model(**kw), lib)
        for f in fragments:
            assert f in str(exc.value), (kw, str(exc.value))


def test_wrong_feed_dtype_rejected(hla2_sess):
    feed = _good_feed()
    _expect_run_error(hla2_sess, dict(feed, state=feed["state"].astype(np.float16)), "float16")


@pytest.mark.parametrize("attrs,fragments", [
    (dict(variant="hla4"), ["attribute 'variant' is 'hla4'", "hla2, ahla, hla3"]),
    (dict(variant=3), ["attribute 'variant' must be of type string"]),
    (dict(decay=[1.5]), ["attribute 'decay' value 1.5", "outside (0, 1]"]),
    (dict(decay=[0.9, 0.0]), ["attribute 'decay' value 0", "index 1"]),
    (dict(decay=[float("nan")]), ["attribute 'decay'"]),
    (dict(decay=[0.9, 0.9, 0.9]), ["attribute 'decay' has 3 values", "expected 1 or H = 2"]),
    (dict(variant="hla3", decay=[0.9]), ["'decay' must be 1.0 for variant hla3"]),
    (dict(variant="ahla", ridge=0.1), ["'ridge' must be 0 for variant ahla"]),
    (dict(variant="hla3", ridge=0.1), ["'ridge' must be 0 for variant hla3"]),
    (dict(ridge=-0.5), ["attribute 'ridge' is -0.5"]),
    (dict(eps=-1e-3), ["attribute 'eps' is -0.001"]),
    (dict(normalize=2), ["attribute 'normalize' is 2", "0 or 1"]),
    (dict(normalize=1.0), ["attribute 'normalize' must be of type int"]),
])
def test_bad_attributes(lib, attrs, fragments):
    """Attribute errors surface at session creation or at the first run (decay length needs H)."""
    with pytest.raises(Exception) as exc:
        sess = single_node_session(single_node_model("float32", **attrs), lib)
        sess.run(None, _good_feed())
    for f in fragments:
        assert f in str(exc.value), str(exc.value)


def test_single_float_decay_accepted(lib):
    # `decay` as a FLOAT attribute (not FLOATS) means one value for every head
    rng = np.random.default_rng(5)
    sess = single_node_session(single_node_model("float32", variant="ahla", decay=0.9), lib)
    q, k, v = _inputs(rng, 1, 5, 2, 4, 3, False)
    o, _ = sess.run(None, {"q": q, "k": k, "v": v, "state": np.zeros((1, 2, 24), np.float32)})
    ro, _ = _ref(q, k, v, "ahla", [0.9], 0, 0.0)
    assert rel_rms(o, ro) <= 2e-5


def test_concurrent_runs_of_one_session(lib):
    """ORT may run Compute of one kernel from several threads at once (concurrent Run calls on one
    session): each call must get exactly its own serial result. Enough work per call (B*H = 8
    heads, T = 16, hla2 d = dv = 32: 8 * 16 * 2048 state updates) for the worker pool, so calls
    contend for it (one region at a time, the others run on their own thread)."""
    import threading
    B, T, H, d, dv = 2, 16, 4, 32, 32
    decay = [0.9, 0.95, 0.99, 1.0]
    sess = single_node_session(single_node_model("float32", **_attrs("hla2", decay, 1, 0.0)), lib,
                               intra_op_num_threads=2)
    rng = np.random.default_rng(21)
    N = ref_state_size("hla2", d, dv, True, 0.0)
    feeds = []
    for _ in range(6):
        q, k, v = _inputs(rng, B, T, H, d, dv, True)
        feeds.append({"q": q, "k": k, "v": v, "state": np.zeros((B, H, N), np.float32)})
    serial = [sess.run(None, f) for f in feeds]
    results, errors = [None] * len(feeds), []
    barrier = threading.Barrier(len(feeds))

    def worker(i):
        try:
            barrier.wait()
            for _ in range(5):
                results[i] = sess.run(None, feeds[i])
                np.testing.assert_array_equal(results[i][0], serial[i][0])
                np.testing.assert_array_equal(results[i][1], serial[i][1])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(r is not None for r in results)
    # and the serial results are right
    for f, (o, s) in zip(feeds[:2], serial[:2]):
        ro, rs = _ref(f["q"], f["k"], f["v"], "hla2", decay, 1, 0.0)
        assert rel_rms(o, ro) <= 2e-5 and rel_rms(s, rs.reshape(s.shape)) <= 2e-6
