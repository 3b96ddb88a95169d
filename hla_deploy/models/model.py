"""HLALanguageModel: a byte-level language model whose token mixers are HLA (hla_deploy.ops).

Exact forward (the exporters trace this module with torch.export; every op is a plain matmul / rsqrt /
silu / add, and the HLA mixer is hla_deploy.layers.HLAAttention, one HLARecurrentStep each).
Shapes: B batch, T tokens, D = d_model, L = n_layers, H = n_heads, d = head_dim, dv = value_dim,
F = mlp_hidden, V = vocab_size, N = config.state_size. `rms(x, w)` is

    rms(x, w) = x * rsqrt(mean(x * x, axis=-1) + rms_eps) * w      (reduction over the last axis)

and `l2(x)` is x * rsqrt(sum(x * x, axis=-1) + QK_L2_EPS) with QK_L2_EPS = 1e-6 (a fixed constant).

    x = embed.weight[input_ids]                                      # [B, T, D]
    for i in range(L):                                               # block i, prefix blocks.{i}.
        h = rms(x, attn_norm.weight)                                 # [B, T, D]
        q = l2((h @ attn.q_proj.weight^T).reshape(B, T, H, d))       # [B, T, H, d]
        k = l2((h @ attn.k_proj.weight^T).reshape(B, T, H, d))       # [B, T, H, d]
        v = (h @ attn.v_proj.weight^T).reshape(B, T, H, dv)          # [B, T, H, dv]
        o, state_out[i] = HLARecurrentStep(q, k, v, state[i];        # o [B, T, H, dv], state [B, H, N]
                              variant, decay, normalize, eps, ridge)
        o = rms(o, attn.head_norm.weight)                            # per head, weight [dv] shared by heads
        x = x + o.reshape(B, T, H * dv) @ attn.o_proj.weight^T       # [B, T, D]
        h = rms(x, mlp_norm.weight)
        x = x + (silu(h @ mlp.gate_proj.weight^T) * (h @ mlp.up_proj.weight^T)) @ mlp.down_proj.weight^T
    x = rms(x, norm.weight)
    logits = x @ embed.weight^T          (tie_embeddings)  or  x @ lm_head.weight^T   # [B, T, V]

Parameter names and shapes (the safetensors keys; no biases anywhere):

    embed.weight                      [V, D]
    blocks.{i}.attn_norm.weight       [D]
    blocks.{i}.attn.q_proj.weight     [H*d, D]
    blocks.{i}.attn.k_proj.weight     [H*d, D]
    blocks.{i}.attn.v_proj.weight     [H*dv, D]
    blocks.{i}.attn.head_norm.weight  [dv]
    blocks.{i}.attn.o_proj.weight     [D, H*dv]
    blocks.{i}.mlp_norm.weight        [D]
    blocks.{i}.mlp.gate_proj.weight   [F, D]
    blocks.{i}.mlp.up_proj.weight     [F, D]
    blocks.{i}.mlp.down_proj.weight   [D, F]
    norm.weight                       [D]
    lm_head.weight                    [V, D]   (only when tie_embeddings is False)

The model state is one tensor [L, B, H, N], float32 (float64 for a float64 model): layer i's
HLARecurrentStep state (layout in docs/OP_CONTRACT.md). The same forward serves a prefill
(T > 1) and a one-token decode step (T = 1); feeding the returned state back continues the
sequence exactly.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from hla_deploy.layers import HLAAttention
from hla_deploy.layers.norms import QK_L2_EPS, RMSNorm, l2_normalize, rms_norm  # noqa: F401 (re-exported)
from hla_deploy.models.checkpoint import fill_model, load_config, save_checkpoint
from hla_deploy.models.config import HLAConfig


def hla_mixer(config: HLAConfig, backend: str = "auto") -> HLAAttention:
    """The token mixer of HLALanguageModel: an HLAAttention layer (L2-normalised q, k; per-head
    RMSNorm of the output with eps rms_eps; no biases), parameters q_proj, k_proj, v_proj,
    head_norm, o_proj as in the checkpoints."""
    c = config
    return HLAAttention(c.d_model, c.n_heads, c.head_dim, c.value_dim, variant=c.variant,
                        decay=c.decay, normalize=c.normalize, eps=c.eps, ridge=c.ridge, qk_norm=True,
                        head_norm=True, norm_eps=c.rms_eps, bias=False, backend=backend)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); parameters gate_proj [F, D], up_proj [F, D], down_proj [D, F]."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class HLABlock(nn.Module):
    """Pre-norm residual block: x + mixer(rms(x)), then x + mlp(rms(x))."""

    def __init__(self, config: HLAConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.rms_eps)
        self.attn = hla_mixer(config)
        self.mlp_norm = RMSNorm(config.d_model, config.rms_eps)
        self.mlp = SwiGLU(config.d_model, config.mlp_hidden)

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor],
                return_state: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        a, new_state = self.attn(self.attn_norm(x), state, return_state=return_state)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x, new_state


class HLALanguageModel(nn.Module):
    """Byte-level HLA language model (see the module docstring for the exact forward).

    `model(input_ids [B, T] int64, state=None [L, B, H, N]) -> (logits [B, T, V], new_state [L, B, H, N])`.
    input_ids may also be int32, or uint8 (bytes: with vocab_size >= 256 their range needs no
    check, so a training step on a GPU reads no value back to the host).
    Logits are float32 (float64 for a float64 model); the state is float32 (float64 for a float64
    model). `attn_backend` ("auto", "naive", "recurrent", "chunk", "triton") is passed to
    hla_deploy.ops.hla_attention.
    """

    def __init__(self, config: HLAConfig, attn_backend: str = "auto"):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList([HLABlock(config) for _ in range(config.n_layers)])
        self.attn_backend = attn_backend
        self.norm = RMSNorm(config.d_model, config.rms_eps)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """N(0, 0.02) for embeddings and projections, residual outputs scaled by 1/sqrt(2L), norms 1."""
        std = 0.02
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, std=out_std)
            else:
                nn.init.normal_(p, std=std)

    @property
    def attn_backend(self) -> str:
        """The hla_attention backend of every mixer (setting it sets every block's attn.backend)."""
        return self.blocks[0].attn.backend

    @attn_backend.setter
    def attn_backend(self, backend: str) -> None:
        for block in self.blocks:
            block.attn.backend = backend

    # ------------------------------------------------------------------ state
    @property
    def state_dtype(self) -> torch.dtype:
        return torch.float64 if self.embed.weight.dtype == torch.float64 else torch.float32

    def init_state(self, batch_size: int, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """Zero state [L, B, H, N] (float32; float64 for a float64 model) on `device` (default: the model's)."""
        c = self.config
        if device is None:
            device = self.embed.weight.device
        return torch.zeros(c.n_layers, batch_size, c.n_heads, c.state_size, dtype=self.state_dtype,
                           device=device)

    def _check_inputs(self, input_ids: torch.Tensor, state: Optional[torch.Tensor]) -> None:
        c = self.config
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor [B, T] int64, got {type(input_ids).__name__}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have rank 2 [B, T], got shape {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise TypeError(f"input_ids must be int64 (or int32, uint8), got {input_ids.dtype}")
        B, T = input_ids.shape
        if B < 1 or T < 1:
            raise ValueError(f"input_ids must have B >= 1 and T >= 1, got shape {tuple(input_ids.shape)}")
        if torch.compiler.is_compiling():   # value checks need data: not while tracing / exporting
            lo, hi = 0, 0
        elif input_ids.dtype == torch.uint8 and c.vocab_size >= 256:
            lo, hi = 0, 0   # bytes are in range by their dtype: no data check (a device sync on CUDA)
        else:
            lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"input_ids values must be in [0, {c.vocab_size}), got range [{lo}, {hi}]")
        if state is not None:
            want = (c.n_layers, B, c.n_heads, c.state_size)
            if not isinstance(state, torch.Tensor) or tuple(state.shape) != want:
                got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
                raise ValueError(f"state must have shape [L, B, H, N] = {list(want)}, got {got}")
            if state.dtype != self.state_dtype:
                raise TypeError(f"state must be {self.state_dtype}, got {state.dtype}")

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, state: Optional[torch.Tensor] = None, *,
                return_state: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """input_ids [B, T] int64, state [L, B, H, N] or None (zeros) -> (logits [B, T, V], state [L, B, H, N]).

        return_state=False skips computing the final state (training; the quadratic "naive"
        backend, which has no state) and returns (logits, None).
        """
        self._check_inputs(input_ids, state)
        x = self.embed(input_ids.long())                                     # [B, T, D]
        new_states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[i], return_state)
            new_states.append(s)
        x = self.norm(x)
        w = self.embed.weight if self.config.tie_embeddings else self.lm_head.weight
        logits = F.linear(x, w)                                              # [B, T, V]
        if logits.dtype != torch.float64:
            logits = logits.float()
        return logits, (torch.stack(new_states, 0) if return_state else None)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> "object":
        """Write config.json + model.safetensors into `directory` (atomically); returns the Path."""
        return save_checkpoint(self, directory)

    @classmethod
    def load(cls, directory, map_location="cpu", attn_backend: str = "auto") -> "HLALanguageModel":
        """Load a checkpoint directory, checking every tensor name, shape and dtype; raises
        CheckpointError naming the file and the problem."""
        model = fill_model(cls(load_config(directory), attn_backend=attn_backend), directory)
        return model.to(map_location) if map_location is not None else model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_checkpoint(directory, map_location="cpu", attn_backend: str = "auto") -> HLALanguageModel:
    """Build an HLALanguageModel from `directory`, checking every tensor name, shape and dtype
    (HLALanguageModel.load)."""
    return HLALanguageModel.load(directory, map_location=map_location, attn_backend=attn_backend)
