"""Capture the HLA op calls of a model's forward and re-check each against the float32 chunk form.

    calls = capture_hla_calls(monkeypatch)      # every HLAAttention's hla_attention call, recorded
    loss = model(...); loss.backward()
    errs = op_errors(calls[i])                  # o, dq, dk, dv: relative RMS vs the chunk form

`capture_hla_calls` wraps hla_deploy.layers.attention.hla_attention (eager forwards only): the
recorded q, k, v are exactly what reached the op (their dtype is what the layer fed it) and
keep their gradients (retain_grad), so after backward q.grad is the op's own dq. `op_errors`
runs hla_attention(backend="chunk") in float32, autocast and TF32 off, on the same q, k, v
(promoted to float32) and back-propagates the same grad_o (o.grad): the only difference left is
the backend's arithmetic on 16-bit operands.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from reference import rel_rms


@dataclass
class OpCall:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    state: torch.Tensor
    kwargs: dict


def capture_hla_calls(monkeypatch) -> list:
    import hla_deploy.layers.attention as attention
    real = attention.hla_attention
    calls = []

    def spy(q, k, v, **kwargs):
        o, state = real(q, k, v, **kwargs)
        if torch.is_grad_enabled() and q.requires_grad:
            for t in (q, k, v, o):
                t.retain_grad()
        calls.append(OpCall(q, k, v, o, state, dict(kwargs)))
        return o, state

    monkeypatch.setattr(attention, "hla_attention", spy)
    return calls


def chunk_reference(call: OpCall) -> dict:
    """o, dq, dk, dv of the float32 chunk form on the call's inputs and grad_o (float32 CPU/GPU)."""
    from hla_deploy.ops import hla_attention
    kw = dict(call.kwargs, backend="chunk", output_final_state=False)
    leaves = [t.detach().float().requires_grad_() for t in (call.q, call.k, call.v)]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(call.q.device.type, enabled=False):
            o, _ = hla_attention(*leaves, **kw)
            o.backward(call.o.grad.float())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"o": o.detach(), "dq": leaves[0].grad, "dk": leaves[1].grad, "dv": leaves[2].grad}


def op_errors(call: OpCall) -> dict:
    """Relative RMS errors of the call's o and its op's dq, dk, dv against chunk_reference."""
    ref = chunk_reference(call)
    got = {"o": call.o.detach(), "dq": call.q.grad, "dk": call.k.grad, "dv": call.v.grad}
    return {name: rel_rms(got[name].float().cpu(), ref[name].cpu()) for name in got}
