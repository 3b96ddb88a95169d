"""Mixed precision (bf16 / fp16 autocast) through HLAAttention, the HLA op and HLALanguageModel.

What is checked on the CPU (the GPU checks at the demo's shapes are tests/gpu/test_train_bf16.py):
- the op ignores an ambient autocast: the chunk form computes in float32 whatever autocast says
  (before, a bf16 autocast ran its matmuls, the state products included, in bf16);
- the layer feeds the op the autocast dtype, and the dtype at every boundary of the bf16 model
  (q, k, v bf16 into the op, state float32, o bf16, logits and loss float32, weights and their
  gradients float32);
- the whole bf16-autocast model path with the chunk backend: every op call's o, dq, dk, dv
  against the float32 chunk form on the same inputs and upstream gradient;
- the fp16 Triton path of a model under autocast, on the Triton CPU interpreter (its bf16 tl.dot
  is wrong, tests/test_triton_hla.py's skip reason, so bf16 Triton runs only on the GPU).
"""
import pytest
import torch
import torch.nn.functional as F

from hla_deploy.layers import HLAAttention
from hla_deploy.models import HLAConfig, HLALanguageModel
from hla_deploy.ops import hla_attention
from hla_deploy.ops import triton as hla_triton
from op_capture import capture_hla_calls, op_errors
from reference import make_qkv

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# bf16 rounding of a float32 result: at most 2^-9 relative per element (round to nearest)
BF16_ONE_ROUNDING = 2.0 ** -9
# float16 Triton kernels vs the float32 chunk form (tests/test_triton_hla.py: FP16_TOL, measured
# at most 7.5e-4 on the interpreter and the H200)
FP16_TOL = 3e-3


def _tiny_model(backend: str) -> HLALanguageModel:
    torch.manual_seed(0)
    cfg = HLAConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, value_dim=16, mlp_hidden=48,
                    decay=[0.9, 0.99])
    return HLALanguageModel(cfg, attn_backend=backend)


def _batch(B=2, T=40, seed=0):
    ids = torch.randint(0, 256, (B, T + 1), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return ids[:, :-1], ids[:, 1:].long()


def test_op_ignores_ambient_autocast():
    """bf16 q, k, v through the chunk form: identical o, state and gradients with autocast on or off."""
    q, k, v = make_qkv(1, 24, 2, 8, 8, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(1),
                       l2norm=True)

    def run(ctx):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with ctx:
            o, s = hla_attention(*leaves, decay=[0.9, 0.99], backend="chunk", output_final_state=True)
        (o.float().square().sum() + s.sum()).backward()
        return [o, s] + [t.grad for t in leaves]

    off = run(torch.autocast("cpu", enabled=False))
    on = run(torch.autocast("cpu", dtype=torch.bfloat16))
    assert on[1].dtype == torch.float32 and on[0].dtype == torch.bfloat16
    for a, b in zip(on, off):
        assert torch.equal(a, b)


def test_layer_feeds_the_autocast_dtype(monkeypatch):
    calls = capture_hla_calls(monkeypatch)
    layer = HLAAttention(32, 2, 16, decay=0.95, backend="chunk")
    x = torch.randn(2, 12, 32)
    y, s = layer(x)
    assert calls[-1].q.dtype == torch.float32 and y.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, s = layer(x)
    c = calls[-1]
    assert (c.q.dtype, c.k.dtype, c.v.dtype, c.o.dtype) == (torch.bfloat16,) * 4
    assert s.dtype == torch.float32 and c.state.dtype == torch.float32
    assert y.dtype == torch.bfloat16                                      # o_proj under autocast
    x64 = x.double()
    layer64 = layer.double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer64(x64)
    assert calls[-1].q.dtype == torch.float64                             # float64 is never cast


def test_bf16_autocast_model_chunk_path(monkeypatch):
    """The bf16 model path with the chunk backend: dtypes at every boundary, and each op call's
    o / dq / dk / dv equal to the float32 chunk form's on the same inputs up to ONE bf16 rounding
    (the op computes in float32 and rounds its results to the bf16 of its inputs)."""
    model = _tiny_model("chunk")
    x, y = _batch()
    calls = capture_hla_calls(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(x, return_state=False)
        loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
    loss.backward()
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert len(calls) == model.config.n_layers
    for c in calls:
        assert (c.q.dtype, c.k.dtype, c.v.dtype, c.o.dtype) == (torch.bfloat16,) * 4
        err = op_errors(c)
        assert max(err.values()) <= BF16_ONE_ROUNDING, err
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = model(x)                                   # a prefill's state [L, B, H, N]
    assert state.dtype == torch.float32
    # against the float32 model: the same loss up to bf16 rounding of the activations
    with torch.no_grad():
        ref, _ = model(x, return_state=False)
    loss32 = F.cross_entropy(ref.reshape(-1, 256), y.reshape(-1))
    assert abs(float(loss.detach()) - float(loss32)) <= 1e-2 * float(loss32)


@pytest.mark.skipif(not hla_triton.is_available(), reason="Triton cannot run here (no CUDA and TRITON_INTERPRET != 1)")
def test_fp16_autocast_model_triton_path(monkeypatch):
    """The fp16-autocast model with the Triton backend (the CPU interpreter here): every op call
    gets fp16 q, k, v, and its o / dq / dk / dv agree with the float32
    chunk form on the same inputs within FP16_TOL."""
    model = _tiny_model("triton").to(DEV)
    x, y = (t.to(DEV) for t in _batch())
    calls = capture_hla_calls(monkeypatch)
    with torch.autocast(DEV, dtype=torch.float16):
        logits, _ = model(x, return_state=False)
        loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
    loss.backward()
    assert len(calls) == model.config.n_layers
    for c in calls:
        assert c.q.dtype == torch.float16
        err = op_errors(c)
        assert max(err.values()) <= FP16_TOL, err
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())
