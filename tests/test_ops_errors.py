"""Bad input to hla_attention: a clear ValueError/TypeError naming the tensor and what was expected."""
import sys
import types

import pytest
import torch

from hla_deploy.ops import hla_attention, state_size

B, T, H, d, dv = 2, 5, 3, 4, 6


def _qkv(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, T, H, d, generator=g).to(dtype), torch.randn(B, T, H, d, generator=g).to(dtype),
            torch.randn(B, T, H, dv, generator=g).to(dtype))


def _call(**over):
    q, k, v = _qkv()
    args = dict(q=q, k=k, v=v)
    args.update({n: over.pop(n) for n in ("q", "k", "v") if n in over})
    return hla_attention(args["q"], args["k"], args["v"], **over)


@pytest.mark.parametrize("name,shape", [("q", (B, T, H)), ("k", (B, T, H, d, 1)), ("v", (T, H, dv))])
def test_wrong_rank(name, shape):
    with pytest.raises(ValueError, match=rf"{name} must have rank 4"):
        _call(**{name: torch.zeros(shape)})


@pytest.mark.parametrize("name,shape,match", [
    ("k", (B + 1, T, H, d), r"k has shape .* expected \[B, T, H, \*\]"),
    ("v", (B, T + 1, H, dv), r"v has shape .* expected \[B, T, H, \*\]"),
    ("k", (B, T, H + 1, d), r"k has shape .* expected \[B, T, H, \*\]"),
    ("k", (B, T, H, d + 1), r"k has head dim 5, expected q's head dim d=4"),
])
def test_mismatched_shapes(name, shape, match):
    with pytest.raises(ValueError, match=match):
        _call(**{name: torch.zeros(shape)})


def test_zero_tokens():
    with pytest.raises(ValueError, match=r"T = 0 tokens; expected T >= 1"):
        _call(q=torch.zeros(B, 0, H, d), k=torch.zeros(B, 0, H, d), v=torch.zeros(B, 0, H, dv))


def test_not_a_tensor():
    with pytest.raises(TypeError, match=r"q must be a torch.Tensor"):
        _call(q=[[1.0]])


def test_unknown_variant():
    with pytest.raises(ValueError, match=r"unknown HLA variant 'hla4'; expected one of hla2, ahla, hla3"):
        _call(variant="hla4")


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, float("nan"), float("inf"), [0.9, 1.01, 0.9]])
def test_decay_out_of_range_or_not_finite(decay):
    with pytest.raises(ValueError, match=r"decay values must be finite and in \(0, 1\]"):
        _call(decay=decay)


@pytest.mark.parametrize("decay", [[0.9, 0.9], [0.9] * (H + 1), torch.full((2,), 0.9)])
def test_decay_wrong_length(decay):
    with pytest.raises(ValueError, match=rf"decay has \d+ values, expected 1 or H={H}"):
        _call(decay=decay)


@pytest.mark.parametrize("decay,exc,match", [
    (torch.full((H, 1), 0.9), ValueError, r"decay must be a float or a 1-D sequence"),
    ("0.9", TypeError, r"decay must be a float, a sequence of floats or a 1-D tensor"),
    (["a"] * H, TypeError, r"decay values must be real numbers"),
    (torch.ones(H, dtype=torch.int64), TypeError, r"decay tensor must be floating point"),
])
def test_decay_wrong_type(decay, exc, match):
    with pytest.raises(exc, match=match):
        _call(decay=decay)


@pytest.mark.parametrize("decay", [0.9, [1.0, 1.0, 0.99]])
def test_hla3_requires_decay_one(decay):
    with pytest.raises(ValueError, match=r"variant 'hla3' requires decay == 1"):
        _call(variant="hla3", decay=decay)


def test_negative_or_nonfinite_ridge():
    with pytest.raises(ValueError, match=r"ridge must be finite and >= 0"):
        _call(ridge=-0.1)
    with pytest.raises(ValueError, match=r"ridge must be finite and >= 0"):
        _call(ridge=float("nan"))


@pytest.mark.parametrize("variant", ["ahla", "hla3"])
def test_ridge_only_for_hla2(variant):
    with pytest.raises(ValueError, match=rf"ridge=0.5 is only defined for variant 'hla2', got variant '{variant}'"):
        _call(variant=variant, ridge=0.5)


@pytest.mark.parametrize("eps", [-1e-6, float("inf")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match=r"eps must be finite and >= 0"):
        _call(eps=eps)


def test_initial_state_wrong_rank_shape_size():
    N = state_size("hla2", d, dv)
    with pytest.raises(ValueError, match=r"initial_state must have rank 3 \[B, H, N\]"):
        _call(initial_state=torch.zeros(B, H * N))
    with pytest.raises(ValueError, match=rf"initial_state has shape \({B}, {H}, {N + 1}\), expected "
                                         rf"\[B, H, N\] = \[{B}, {H}, {N}\]"):
        _call(initial_state=torch.zeros(B, H, N + 1))
    with pytest.raises(ValueError, match=r"initial_state has shape .* expected \[B, H, N\]"):
        _call(initial_state=torch.zeros(B + 1, H, N))
    # the size depends on the options: a hla2 state is the wrong size once normalize is on
    with pytest.raises(ValueError, match=r"normalize=True"):
        _call(initial_state=torch.zeros(B, H, N), normalize=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_initial_state_half_precision_rejected(dtype):
    N = state_size("hla2", d, dv)
    with pytest.raises(TypeError, match=rf"initial_state has dtype {dtype}, expected float32"):
        _call(initial_state=torch.zeros(B, H, N, dtype=dtype))


def test_float64_state_needs_float64_q():
    N = state_size("hla2", d, dv)
    with pytest.raises(TypeError, match=r"initial_state is float64 but q is torch.float32"):
        _call(initial_state=torch.zeros(B, H, N, dtype=torch.float64))
    # a float32 state with float64 q is accepted (computed in float64)
    q, k, v = _qkv(torch.float64)
    o, s = hla_attention(q, k, v, initial_state=torch.zeros(B, H, N), output_final_state=True)
    assert o.dtype == torch.float64 and s.dtype == torch.float64


def test_naive_rejects_initial_state_and_final_state():
    N = state_size("hla2", d, dv)
    with pytest.raises(ValueError, match=r"backend 'naive' supports only a zero initial state"):
        _call(backend="naive", initial_state=torch.zeros(B, H, N))
    with pytest.raises(ValueError, match=r"backend 'naive' does not compute a state"):
        _call(backend="naive", output_final_state=True)


def test_unknown_backend_and_bad_chunk_size():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; expected one of auto, naive"):
        _call(backend="cuda")
    for cs in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match=r"chunk_size must be an int >= 1"):
            _call(chunk_size=cs)


@pytest.mark.parametrize("name", ["k", "v"])
def test_kv_dtype_must_match_q(name):
    q, k, v = _qkv()
    bad = {"k": k, "v": v}[name].to(torch.float16)
    with pytest.raises(TypeError, match=rf"{name} has dtype torch.float16, expected q's dtype torch.float32"):
        _call(**{name: bad})


def test_unsupported_activation_dtype():
    q, k, v = (x.to(torch.int32) for x in _qkv())
    with pytest.raises(TypeError, match=r"q has dtype torch.int32, expected float32, float16, bfloat16"):
        hla_attention(q, k, v)


def _install_fake_triton(monkeypatch, fake):
    """Make `from hla_deploy.ops import triton` return `fake` (whether or not the real one is loaded)."""
    import hla_deploy.ops as ops_pkg
    monkeypatch.setitem(sys.modules, "hla_deploy.ops.triton", fake)
    monkeypatch.setattr(ops_pkg, "triton", fake, raising=False)


def test_triton_backend_unavailable_is_a_clear_error(monkeypatch):
    """backend='triton' without a usable module: RuntimeError saying why (never a silent fallback)."""
    fake = types.ModuleType("hla_deploy.ops.triton")
    fake.is_available = lambda: False
    fake.supports = lambda variant, normalize, ridge: True
    fake.hla_attention_triton = lambda *args: pytest.fail("must not be called")
    _install_fake_triton(monkeypatch, fake)
    with pytest.raises(RuntimeError, match=r"backend 'triton' is unavailable: .*is_available\(\) returned False"):
        _call(backend="triton")
    broken = types.ModuleType("hla_deploy.ops.triton")  # importable name, but missing functions
    _install_fake_triton(monkeypatch, broken)
    with pytest.raises(RuntimeError, match=r"hla_deploy.ops.triton lacks is_available, supports, hla_attention_triton"):
        _call(backend="triton")


def test_triton_backend_dispatch_arguments(monkeypatch):
    """backend='triton' passes validated arguments to hla_attention_triton through the custom op
    (decay as given: 1 or H floats; the zero state for initial_state=None; the op always asks for
    the final state); unsupported options give a clear ValueError."""
    seen = {}
    fake = types.ModuleType("hla_deploy.ops.triton")
    fake.is_available = lambda: True
    fake.supports = lambda variant, normalize, ridge, head_dim=None, value_dim=None: ridge == 0.0

    def hla_attention_triton(q, k, v, variant, decay, normalize, eps, ridge, initial_state, output_final_state):
        seen.update(variant=variant, decay=decay, normalize=normalize, eps=eps, ridge=ridge,
                    initial_state=initial_state, output_final_state=output_final_state)
        return torch.zeros_like(v), initial_state.clone()

    fake.hla_attention_triton = hla_attention_triton
    _install_fake_triton(monkeypatch, fake)
    o, s = _call(backend="triton", variant="ahla", decay=0.5, normalize=True, eps=1e-3)
    state0 = seen.pop("initial_state")
    assert seen == dict(variant="ahla", decay=[0.5], normalize=True, eps=1e-3, ridge=0.0,
                        output_final_state=True)
    assert state0.dtype == torch.float32 and tuple(state0.shape) == (B, H, 4 * 6 * 2 + 2 * 4)  # ahla N
    assert not state0.any() and s is None
    with pytest.raises(ValueError, match=r"backend 'triton' does not support variant='hla2', normalize=False, "
                                         r"ridge=0.5"):
        _call(backend="triton", ridge=0.5)
    # auto never picks triton for CPU tensors
    seen.clear()
    _call(backend="auto")
    assert seen == {}
