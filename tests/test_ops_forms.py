"""The torch forms of the HLA operator (naive, recurrent, chunk) against float64 references.

Ground truth: tests/reference.py. ``ref_hla`` (serial loops, hla2 through the paper's
(S, C, m, G, h) recurrence) is itself checked against ``brute_force_hla`` (the nested-sum
definitions of HLA_MATH.md) here, so every form is tied to the definitions.
"""
import pytest
import torch

from hla_deploy.ops import hla_attention
from reference import brute_force_hla, make_qkv, ref_hla, rel_err, rel_rms

F64_TOL = 1e-10  # float64 agreement, relative to max |reference|

# every variant x option combination of op contract v1: (variant, decay, normalize, ridge)
CONFIGS = (
    [("hla2", dec, norm, ridge) for dec in (1.0, 0.9, (0.95, 0.7)) for norm in (False, True)
     for ridge in (0.0, 0.25)]
    + [("ahla", dec, norm, 0.0) for dec in (1.0, 0.9, (0.95, 0.7)) for norm in (False, True)]
    + [("hla3", 1.0, norm, 0.0) for norm in (False, True)]
)


def _ids(cfg):
    variant, dec, norm, ridge = cfg
    return f"{variant}-decay{dec}-norm{int(norm)}-ridge{ridge}".replace(" ", "")


def _inputs(B, T, H, d, dv, normalize, seed=0, l2norm=False):
    """Random inputs; with normalize, positive q, k (as feature maps give) keep q·n away from 0."""
    q, k, v = make_qkv(B, T, H, d, dv, generator=torch.Generator().manual_seed(seed), l2norm=l2norm)
    if normalize:
        q, k = q.abs(), k.abs()
    return q, k, v


def _kw(cfg):
    variant, dec, norm, ridge = cfg
    return dict(variant=variant, decay=list(dec) if isinstance(dec, tuple) else dec, normalize=norm,
                eps=1e-6, ridge=ridge)


def _ref(q, k, v, cfg, initial_state=None):
    kw = _kw(cfg)
    return ref_hla(q, k, v, kw["variant"], kw["decay"], kw["normalize"], kw["eps"], kw["ridge"],
                   initial_state=initial_state)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_reference_matches_brute_force_definition(cfg):
    """tests/reference.py's serial loop equals the nested-sum definitions (tiny T)."""
    q, k, v = _inputs(1, 5, 2, 3, 2, cfg[2], seed=1)
    o_ref, _ = _ref(q, k, v, cfg)
    kw = _kw(cfg)
    o_bf = brute_force_hla(q, k, v, kw["variant"], kw["decay"], kw["normalize"], kw["eps"], kw["ridge"])
    assert rel_err(o_ref, o_bf) < 1e-12


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_forms_agree_float64(cfg):
    """naive, recurrent and chunk (chunk sizes 1, 4, 5, T, > T; odd T; d != dv) equal the reference,
    outputs and final states, from a zero and from a random initial state."""
    B, T, H, d, dv = 2, 13, 2, 4, 3
    q, k, v = _inputs(B, T, H, d, dv, cfg[2])
    kw = _kw(cfg)
    o_ref, s_ref = _ref(q, k, v, cfg)
    o_naive, s_naive = hla_attention(q, k, v, backend="naive", **kw)
    assert s_naive is None and o_naive.dtype == torch.float64 and o_naive.shape == (B, T, H, dv)
    assert rel_err(o_naive, o_ref) < F64_TOL
    o_rec, s_rec = hla_attention(q, k, v, backend="recurrent", output_final_state=True, **kw)
    assert s_rec.dtype == torch.float64 and s_rec.shape == s_ref.shape
    assert rel_err(o_rec, o_ref) < F64_TOL
    assert rel_err(s_rec, s_ref) < F64_TOL
    for cs in (1, 4, 5, T, 64):
        o_ch, s_ch = hla_attention(q, k, v, backend="chunk", chunk_size=cs, output_final_state=True, **kw)
        assert rel_err(o_ch, o_ref) < F64_TOL, cs
        assert rel_err(o_ch, o_naive) < F64_TOL, cs
        assert rel_err(s_ch, s_rec) < F64_TOL, cs

    # from a random initial state (no naive: zero state only)
    s0 = torch.randn(s_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    if cfg[2]:  # keep normaliser parts positive-ish so q·n stays away from 0
        s0 = s0.abs()
    o_ref, s_ref = _ref(q, k, v, cfg, initial_state=s0)
    o_rec, s_rec = hla_attention(q, k, v, backend="recurrent", initial_state=s0, output_final_state=True, **kw)
    assert rel_err(o_rec, o_ref) < F64_TOL and rel_err(s_rec, s_ref) < F64_TOL
    for cs in (3, 16):
        o_ch, s_ch = hla_attention(q, k, v, backend="chunk", chunk_size=cs, initial_state=s0,
                                   output_final_state=True, **kw)
        assert rel_err(o_ch, o_ref) < F64_TOL, cs
        assert rel_err(s_ch, s_ref) < F64_TOL, cs


def test_auto_backend_on_cpu_matches_reference():
    """backend='auto' on CPU: chunk for T > 1, recurrent for T = 1; both correct."""
    cfg = ("hla2", 0.9, False, 0.0)
    q, k, v = _inputs(1, 9, 2, 4, 4, False)
    o_ref, s_ref = _ref(q, k, v, cfg)
    o, s = hla_attention(q, k, v, output_final_state=True, **_kw(cfg))
    assert rel_err(o, o_ref) < F64_TOL and rel_err(s, s_ref) < F64_TOL
    o1, s1 = hla_attention(q[:, :1], k[:, :1], v[:, :1], output_final_state=True, **_kw(cfg))
    assert rel_err(o1, o_ref[:, :1]) < F64_TOL
    assert rel_err(s1, _ref(q[:, :1], k[:, :1], v[:, :1], cfg)[1]) < F64_TOL


def test_float_decay_equals_per_head_list_and_tensor():
    q, k, v = _inputs(1, 7, 3, 4, 2, False)
    a, _ = hla_attention(q, k, v, decay=0.8, backend="chunk", chunk_size=3)
    b, _ = hla_attention(q, k, v, decay=[0.8, 0.8, 0.8], backend="chunk", chunk_size=3)
    c, _ = hla_attention(q, k, v, decay=torch.tensor([0.8], dtype=torch.float64), backend="chunk", chunk_size=3)
    assert torch.equal(a, b) and torch.equal(a, c)
    # and per-head decay really is per head: head h equals a run with decay[h] everywhere
    per, _ = hla_attention(q, k, v, decay=[0.8, 0.5, 1.0], backend="chunk", chunk_size=3)
    for h, g in enumerate((0.8, 0.5, 1.0)):
        single, _ = hla_attention(q, k, v, decay=g, backend="chunk", chunk_size=3)
        assert rel_err(per[:, :, h], single[:, :, h]) < 1e-14


@pytest.mark.parametrize("variant,decay", [("hla2", 0.9), ("ahla", 0.9), ("hla3", 1.0)])
@pytest.mark.parametrize("normalize", [False, True])
def test_chunk_gradient_matches_recurrent_float64(variant, decay, normalize):
    """torch.autograd through chunk equals autograd through recurrent (q, k, v, initial state)."""
    ridge = 0.2 if variant == "hla2" else 0.0
    q, k, v = _inputs(1, 7, 2, 3, 2, normalize, seed=3)
    kw = dict(variant=variant, decay=[decay, 0.7] if variant != "hla3" else 1.0, normalize=normalize,
              ridge=ridge, output_final_state=True)
    _, s = hla_attention(q, k, v, backend="recurrent", **kw)
    s0 = torch.rand(s.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    w_o = torch.randn(1, 7, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    w_s = torch.randn(s.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    grads = {}
    for backend in ("recurrent", "chunk"):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v, s0)]
        o, s = hla_attention(*leaves[:3], initial_state=leaves[3], backend=backend, chunk_size=3, **kw)
        loss = (o * w_o).sum() + (s * w_s).sum()
        grads[backend] = torch.autograd.grad(loss, leaves)
    for name, g_rec, g_ch in zip("qkvs", grads["recurrent"], grads["chunk"]):
        assert rel_err(g_ch, g_rec) < 1e-10, name
        assert g_rec.abs().max() > 0, name


# --- reduced precision: bounds measured on this shape, recorded in docs/OPS.md ----------------
# B=2, T=256, H=2, d=dv=32, L2-normalised q, k (abs() when normalize), decay 0.95 (hla3: 1),
# relative RMS error against the float64 reference.
REAL_SHAPE = dict(B=2, T=256, H=2, d=32, dv=32)
REAL_CASES = [("hla2", 0.95), ("ahla", 0.95), ("hla3", 1.0)]


@pytest.mark.parametrize("variant,decay", REAL_CASES)
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("backend", ["chunk", "recurrent"])
@pytest.mark.slow
def test_float32_against_float64(variant, decay, normalize, backend):
    """float32 vs the float64 reference, relative RMS: measured <= 5.0e-7 (o and state, all
    variants, both backends, chunk_size 64); asserted < 2e-6."""
    q, k, v = _inputs(*REAL_SHAPE.values(), normalize, seed=11, l2norm=True)
    o_ref, s_ref = ref_hla(q, k, v, variant, decay, normalize, 1e-6, 0.0)
    o, s = hla_attention(q.float(), k.float(), v.float(), variant=variant, decay=decay, normalize=normalize,
                         backend=backend, output_final_state=True)
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert rel_rms(o, o_ref) < 2e-6
    assert rel_rms(s, s_ref) < 2e-6


# measured max over variants/normalize/backends (see docs/OPS.md):
#   bf16: o 4.1e-3 vs exact-input ref, 1.7e-3 vs ref on the bf16-rounded inputs; state 2.8e-3 / 5e-7
#   fp16: o 5.1e-4 / 2.1e-4; state 3.4e-4 / 5e-7
LOWP_BOUNDS = {torch.bfloat16: (1e-2, 4e-3, 6e-3), torch.float16: (1.5e-3, 6e-4, 1e-3)}


@pytest.mark.parametrize("variant,decay", REAL_CASES)
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", ["chunk", "recurrent"])
@pytest.mark.slow
def test_half_inputs_state_stays_float32(variant, decay, normalize, dtype, backend):
    """bf16/fp16 activations: o in the input dtype, state float32. Relative RMS bounds (asserted):
    bf16 o < 1e-2 vs the exact-input float64 reference and < 4e-3 vs the reference on the rounded
    inputs, state < 6e-3; fp16 o < 1.5e-3 / 6e-4, state < 1e-3; and the state computed from the
    rounded inputs is float32-accurate (< 2e-6), i.e. nothing is accumulated in half precision."""
    q, k, v = _inputs(*REAL_SHAPE.values(), normalize, seed=11, l2norm=True)
    ql, kl, vl = q.to(dtype), k.to(dtype), v.to(dtype)
    o, s = hla_attention(ql, kl, vl, variant=variant, decay=decay, normalize=normalize, backend=backend,
                         output_final_state=True)
    assert o.dtype == dtype and s.dtype == torch.float32
    o_ref, s_ref = ref_hla(q, k, v, variant, decay, normalize, 1e-6, 0.0)
    o_rnd, s_rnd = ref_hla(ql, kl, vl, variant, decay, normalize, 1e-6, 0.0)
    o_bound, o_rnd_bound, s_bound = LOWP_BOUNDS[dtype]
    assert rel_rms(o, o_ref) < o_bound
    assert rel_rms(o, o_rnd) < o_rnd_bound
    assert rel_rms(s, s_ref) < s_bound
    assert rel_rms(s, s_rnd) < 2e-6
