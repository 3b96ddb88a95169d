"""Export YOUR model built with HLA: a time-series forecaster (not a language model).

    python examples/export_your_model.py [--steps 300] [--out export_your_model_out]

The model: a linear front end (per time step: features -> d_model, SiLU), two HLAAttention layers
of different variants (hla2 with decay 0.95, ahla with per-head decay), each in a pre-LayerNorm
residual block, and a linear head predicting the next value of every feature. Its forward takes
and returns the two HLA states as tensors, which is all export_onnx needs:

    forward(x [B, T, F], state1 [B, H, N1], state2 [B, H, N2]) -> (pred [B, T, F], state1, state2)

It is trained for a few hundred steps on synthetic data (sums of sinusoids plus noise, CPU, chunk
form), exported to ONNX with the custom op (one hla_deploy::HLARecurrentStep per layer) and as a
standard-op graph, then run in ONNX Runtime step by step: a prefill of 48 steps, then 16 one-step
calls fed the returned states, compared with one torch pass over all 64 steps.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from hla_deploy.layers import HLAAttention


class Forecaster(nn.Module):
    """Next-step forecaster: x [B, T, F] -> pred [B, T, F] (pred[:, t] estimates x[:, t + 1])."""

    def __init__(self, n_features: int = 3, d_model: int = 32, n_heads: int = 2, head_dim: int = 16):
        super().__init__()
        self.front = nn.Sequential(nn.Linear(n_features, d_model), nn.SiLU())
        self.norm1 = nn.LayerNorm(d_model)
        self.mix1 = HLAAttention(d_model, n_heads, head_dim, variant="hla2", decay=0.95)
        self.norm2 = nn.LayerNorm(d_model)
        self.mix2 = HLAAttention(d_model, n_heads, head_dim, variant="ahla", decay=[0.9, 0.99])
        self.head = nn.Linear(d_model, n_features)

    def init_states(self, batch: int):
        """Zero states (a fresh sequence): ([B, H, N1], [B, H, N2]) float32."""
        return self.mix1.init_state(batch), self.mix2.init_state(batch)

    def forward(self, x, state1, state2):
        h = self.front(x)                                   # [B, T, d_model]
        a, state1 = self.mix1(self.norm1(h), state1)         # hla2
        h = h + a
        a, state2 = self.mix2(self.norm2(h), state2)         # ahla
        h = h + a
        return self.head(h), state1, state2                 # [B, T, F], [B, H, N1], [B, H, N2]


OUTPUT_NAMES = ["pred", "state1_out", "state2_out"]


def synthetic_batch(batch: int, steps: int, n_features: int = 3, gen=None) -> torch.Tensor:
    """[batch, steps + 1, F]: per feature a sum of two sinusoids (random period 8..40, phase) + noise."""
    t = torch.arange(steps + 1, dtype=torch.float32)
    period = 8 + 32 * torch.rand(batch, 1, n_features, 2, generator=gen)
    phase = 2 * math.pi * torch.rand(batch, 1, n_features, 2, generator=gen)
    x = torch.sin(2 * math.pi * t[None, :, None, None] / period + phase).sum(-1)
    return x + 0.05 * torch.randn(x.shape, generator=gen)


def train(model: Forecaster, steps: int = 300, batch: int = 16, seq: int = 64, log_every: int = 50):
    """Adam on the next-step MSE; returns the list of (step, loss)."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    model.train()
    for step in range(1, steps + 1):
        xy = synthetic_batch(batch, seq, gen=gen)
        pred, _, _ = model(xy[:, :-1], *model.init_states(batch))
        loss = torch.nn.functional.mse_loss(pred, xy[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % log_every == 0 or step in (1, steps):
            history.append((step, loss.item()))
    return history


def ort_session(path, library=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if library is not None:
        so.register_custom_ops_library(str(library))
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def step_by_step(sess, x: np.ndarray, states, prefill: int):
    """Prefill x[:, :prefill] in one call, then one call per remaining step fed the returned states."""
    outs = []
    s1, s2 = states
    pred, s1, s2 = sess.run(None, {"x": x[:, :prefill], "state1": s1, "state2": s2})
    outs.append(pred)
    for t in range(prefill, x.shape[1]):
        pred, s1, s2 = sess.run(None, {"x": x[:, t:t + 1], "state1": s1, "state2": s2})
        outs.append(pred)
    return np.concatenate(outs, axis=1), s1, s2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    ap.add_argument("--out", default="export_your_model_out", help="output directory")
    args = ap.parse_args(argv)
    from hla_deploy.exporters import export_onnx
    from hla_deploy.native import ort_library_path

    torch.manual_seed(0)
    model = Forecaster()
    t0 = time.time()
    history = train(model, args.steps)
    print(f"trained {args.steps} steps in {time.time() - t0:.1f} s; next-step MSE "
          + ", ".join(f"{s}: {l:.4f}" for s, l in history))
    model.eval()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, 16, 3), *model.init_states(2))     # traced at B = 2, T = 16
    t0 = time.time()
    names = dict(output_names=OUTPUT_NAMES)                   # inputs: forward's names x, state1, state2
    custom = export_onnx(model, example, out / "forecaster.onnx", op="custom", **names)
    standard = export_onnx(model, example, out / "forecaster_standard.onnx", op="standard", **names)
    print(f"exported {custom} and {standard} in {time.time() - t0:.1f} s (inputs x [batch, seq, 3], "
          f"state1, state2; outputs {', '.join(OUTPUT_NAMES)}; batch and seq dynamic)")

    x = synthetic_batch(3, 64, gen=torch.Generator().manual_seed(7))[:, :-1]   # B = 3, T = 64
    with torch.no_grad():
        ref, r1, r2 = model(x, *model.init_states(3))
    zeros = [s.numpy() for s in model.init_states(3)]
    for label, path, lib in (("ORT + custom op", custom, ort_library_path(build=True)),
                             ("ORT standard ops", standard, None)):
        pred, s1, s2 = step_by_step(ort_session(path, lib), x.numpy(), zeros, prefill=48)
        err = np.abs(pred - ref.numpy()).max() / np.abs(ref.numpy()).max()
        serr = max(np.abs(s - r.numpy()).max() / np.abs(r.numpy()).max() for s, r in ((s1, r1), (s2, r2)))
        mse = float(np.mean((pred[:, :-1] - x.numpy()[:, 1:]) ** 2))
        print(f"{label:17s}: prefill 48 + 16 single steps vs one torch pass over 64: max rel err "
              f"pred {err:.2e}, states {serr:.2e}; forecast MSE {mse:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
