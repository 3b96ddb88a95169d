"""State layout (state.py) and state hand-off between calls of the HLA operator."""
import pytest
import torch

from hla_deploy.ops import (VARIANTS, hla_attention, join_state, paper_state_to_compact, split_state,
                            state_parts, state_size)
from hla_deploy.ops.state import augmented_parts, state_from_augmented
from reference import make_qkv, paper_hla2_serial, ref_hla, ref_state_size, ref_unpack, rel_err

OPTIONS = [("hla2", n, r) for n in (False, True) for r in (0.0, 0.5)] + \
          [(v, n, 0.0) for v in ("ahla", "hla3") for n in (False, True)]


def test_state_size_matches_contract_table():
    d, dv = 5, 3
    assert state_size("hla2", 64, 64) == 8192  # the contract's example
    assert state_size("hla2", d, dv) == d * d + d * dv
    assert state_size("hla2", d, dv, normalize=True) == d * d + d * dv + d
    assert state_size("hla2", d, dv, ridge=0.1) == d * d + 2 * d * dv
    assert state_size("hla2", d, dv, normalize=True, ridge=0.1) == d * d + 2 * d * dv + 2 * d
    assert state_size("ahla", d, dv) == 2 * d * dv
    assert state_size("ahla", d, dv, normalize=True) == 2 * d * dv + 2 * d
    assert state_size("hla3", d, dv) == d * d + 2 * d * dv
    assert state_size("hla3", d, dv, normalize=True) == d * d + 2 * d * dv + 2 * d
    for variant, norm, ridge in OPTIONS:  # and the independent layout of tests/reference.py
        assert state_size(variant, d, dv, norm, ridge) == ref_state_size(variant, d, dv, norm, ridge)
    assert set(VARIANTS) == {"hla2", "ahla", "hla3"}


@pytest.mark.parametrize("variant,normalize,ridge", OPTIONS)
def test_split_join_and_augmented_roundtrip(variant, normalize, ridge):
    d, dv = 4, 3
    N = state_size(variant, d, dv, normalize, ridge)
    x = torch.randn(2, 3, N, dtype=torch.float64)
    parts = split_state(x, variant, d, dv, normalize, ridge)
    assert [n for n, _ in state_parts(variant, d, dv, normalize, ridge)] == list(parts)
    ref_parts = ref_unpack(x, variant, d, dv, normalize, ridge)  # layout written independently
    for name in parts:
        assert torch.equal(parts[name], ref_parts[name]), name
    assert torch.equal(join_state(parts, variant, d, dv, normalize, ridge), x)
    aug = augmented_parts(x, variant, d, dv, normalize, ridge)
    for t in aug.values():
        assert t.shape[-1] in (d, dv + int(normalize))
    assert torch.equal(state_from_augmented(aug, variant, d, dv, normalize, ridge), x)


@pytest.mark.parametrize("normalize,ridge", [(False, 0.0), (True, 0.0), (False, 0.3), (True, 0.3)])
@pytest.mark.parametrize("decay", [1.0, [0.9, 0.6]])
def test_paper_state_to_compact_matches_serial_recurrence(normalize, ridge, decay):
    """The paper's (S, C, m, G, h) after T tokens, converted, equals our final state, and
    continuing from it equals one long run."""
    g = torch.Generator().manual_seed(21)
    q, k, v = make_qkv(2, 9, 2, 3, 4, generator=g)
    if normalize:
        q, k = q.abs(), k.abs()
    S, C, m, G, h = paper_hla2_serial(q[:, :6], k[:, :6], v[:, :6], decay)
    compact = paper_state_to_compact(S, C, G, m, h, normalize=normalize, ridge=ridge)
    kw = dict(variant="hla2", decay=decay, normalize=normalize, ridge=ridge)
    _, s_rec = hla_attention(q[:, :6], k[:, :6], v[:, :6], backend="recurrent", output_final_state=True, **kw)
    assert compact.shape == s_rec.shape
    assert rel_err(compact, s_rec) < 1e-12
    o_all, _ = hla_attention(q, k, v, backend="recurrent", **kw)
    o_cont, _ = hla_attention(q[:, 6:], k[:, 6:], v[:, 6:], backend="chunk", initial_state=compact, **kw)
    assert rel_err(o_cont, o_all[:, 6:]) < 1e-10


def test_paper_state_to_compact_needs_m_h_when_normalize():
    S, C, G = torch.zeros(3, 3), torch.zeros(3, 2), torch.zeros(3, 2)
    with pytest.raises(ValueError, match="normalize=True needs the paper's m and h"):
        paper_state_to_compact(S, C, G, normalize=True)


def _kw(variant, normalize, ridge):
    decay = 1.0 if variant == "hla3" else [0.9, 0.75]
    return dict(variant=variant, decay=decay, normalize=normalize, ridge=ridge, output_final_state=True)


@pytest.mark.parametrize("variant,normalize,ridge", OPTIONS)
@pytest.mark.parametrize("first,second", [("chunk", "chunk"), ("recurrent", "recurrent"),
                                          ("chunk", "recurrent"), ("recurrent", "chunk")])
def test_prefill_split_equals_one_prefill(variant, normalize, ridge, first, second):
    """prefill T1 then T2 (state handed over) == one prefill of T1 + T2 (float64)."""
    q, k, v = make_qkv(2, 11, 2, 4, 3, generator=torch.Generator().manual_seed(2))
    if normalize:
        q, k = q.abs(), k.abs()
    kw = _kw(variant, normalize, ridge)
    o_all, s_all = hla_attention(q, k, v, backend="chunk", chunk_size=4, **kw)
    T1 = 5
    o1, s1 = hla_attention(q[:, :T1], k[:, :T1], v[:, :T1], backend=first, chunk_size=3, **kw)
    o2, s2 = hla_attention(q[:, T1:], k[:, T1:], v[:, T1:], backend=second, chunk_size=4,
                           initial_state=s1, **kw)
    assert rel_err(torch.cat([o1, o2], 1), o_all) < 1e-10
    assert rel_err(s2, s_all) < 1e-10


@pytest.mark.parametrize("variant,normalize,ridge", OPTIONS)
def test_prefill_then_decode_steps_equals_one_prefill(variant, normalize, ridge):
    """chunk prefill of 6 tokens, then 5 single-token steps (auto -> recurrent for T = 1)
    == one prefill of 11 tokens == the float64 reference."""
    q, k, v = make_qkv(1, 11, 2, 4, 3, generator=torch.Generator().manual_seed(4))
    if normalize:
        q, k = q.abs(), k.abs()
    kw = _kw(variant, normalize, ridge)
    o_ref, s_ref = ref_hla(q, k, v, kw["variant"], kw["decay"], normalize, 1e-6, ridge)
    outs = []
    o, s = hla_attention(q[:, :6], k[:, :6], v[:, :6], backend="chunk", **kw)
    outs.append(o)
    for t in range(6, 11):
        o, s = hla_attention(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], initial_state=s, **kw)
        outs.append(o)
    assert rel_err(torch.cat(outs, 1), o_ref) < 1e-10
    assert rel_err(s, s_ref) < 1e-10


def test_float32_handoff_keeps_float32_state():
    """float32: split prefill + steps stays close to one prefill; the state stays float32."""
    q, k, v = make_qkv(1, 40, 2, 8, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(9),
                       l2norm=True)
    kw = dict(variant="hla2", decay=0.95, output_final_state=True)
    o_all, s_all = hla_attention(q, k, v, backend="chunk", chunk_size=16, **kw)
    o1, s = hla_attention(q[:, :30], k[:, :30], v[:, :30], backend="chunk", chunk_size=16, **kw)
    outs = [o1]
    for t in range(30, 40):
        o, s = hla_attention(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], initial_state=s, **kw)
        assert s.dtype == torch.float32
        outs.append(o)
    assert rel_err(torch.cat(outs, 1), o_all) < 1e-5
    assert rel_err(s, s_all) < 1e-5


def test_bf16_activations_with_float32_state_handoff():
    q, k, v = make_qkv(1, 12, 2, 8, 8, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3),
                       l2norm=True)
    kw = dict(variant="ahla", decay=0.9, output_final_state=True)
    o1, s1 = hla_attention(q[:, :8], k[:, :8], v[:, :8], **kw)
    assert s1.dtype == torch.float32 and o1.dtype == torch.bfloat16
    o2, s2 = hla_attention(q[:, 8:], k[:, 8:], v[:, 8:], initial_state=s1, **kw)
    o_ref, s_ref = ref_hla(q, k, v, "ahla", 0.9, False, 1e-6, 0.0)
    assert rel_err(s2, s_ref) < 1e-5  # state accumulated in float32 from the bf16 inputs
    assert rel_err(torch.cat([o1, o2], 1), o_ref) < 1e-2  # o rounded once to bf16
