"""HLAAttention: a token mixer layer around the HLA operator (one HLARecurrentStep per call).

    x [B, T, d_model] -> q, k [B, T, H, d], v [B, T, H, dv] (linear projections)
      -> (qk_norm) L2-normalised q, k
      -> o [B, T, H, dv], state [B, H, N] = hla_attention(q, k, v, initial_state=state, ...)
      -> (autocast on) q, k, v cast to the autocast dtype (bf16 training: the Triton kernels get
         bf16 operands; the state stays float32)
      -> (head_norm) per-head RMSNorm of o (weight [dv] shared by the heads)
      -> y = o_proj(o.reshape(B, T, H * dv))  [B, T, d_model]

Parameters: q_proj.weight [H*d, d_model], k_proj.weight [H*d, d_model], v_proj.weight
[H*dv, d_model], o_proj.weight [d_model, H*dv] (+ .bias with bias=True), head_norm.weight [dv]
(with head_norm=True). HLALanguageModel's mixer is this layer (qk_norm=True, head_norm=True), so its
checkpoint keys (blocks.{i}.attn.q_proj.weight, ...) are this layer's parameter names.

decay is a fixed hyper-parameter (python floats, the exported node's attribute): NOT trainable.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hla_deploy.ops import hla_attention, state_size
from hla_deploy.ops.validate import BACKENDS, check_scalar, decay_values
from hla_deploy.ops.state import VARIANTS

from .norms import RMSNorm, l2_normalize


def _autocast_operands(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """q, k, v in the autocast dtype while autocast is on for their device (mixed-precision
    training), else unchanged. Autocast does not cast the inputs of custom ops, so without this
    q, k, v would reach the op in whatever dtype the projections and norms produced; with it the
    Triton kernels always get the 16-bit operands they run fastest on. The op keeps its state
    float32 whatever these dtypes are (hla_deploy/ops/custom_op.py runs with autocast off)."""
    device_type = q.device.type
    if q.dtype == torch.float64 or not torch.is_autocast_enabled(device_type):
        return q, k, v
    dtype = torch.get_autocast_dtype(device_type)
    return q.to(dtype), k.to(dtype), v.to(dtype)


class HLAAttention(nn.Module):
    """HLA token mixer. ``forward(x [B, T, d_model], state=None) -> (y [B, T, d_model], state [B, H, N])``.

    Args:
        d_model: input/output width. n_heads: H. head_dim: d (query/key). value_dim: dv (default d).
        variant: "hla2" | "ahla" | "hla3" (docs/OP_CONTRACT.md). decay: gamma in (0, 1], one float or
            n_heads floats (fixed, not trainable). normalize, eps, ridge: the op's options.
        qk_norm: L2-normalise q and k per head (default True: keeps the state bounded).
        head_norm: per-head RMSNorm of the HLA output before o_proj (default True), eps norm_eps.
        bias: biases on the four projections (default False).
        backend: hla_attention's backend ("auto": Triton on CUDA when it serves the configuration,
            else the chunk form / recurrence). chunk_size: chunk length of the chunk form.

    ``state`` is [B, H, N] float32 (float64 for a float64 layer; N = ``self.state_size``); None
    means the zero state (a fresh sequence). The returned state continues the sequence exactly.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, value_dim: Optional[int] = None,
                 variant: str = "hla2", decay: Union[float, Sequence[float]] = 1.0, normalize: bool = False,
                 eps: float = 1e-6, ridge: float = 0.0, *, qk_norm: bool = True, head_norm: bool = True,
                 norm_eps: float = 1e-6, bias: bool = False, backend: str = "auto", chunk_size: int = 64):
        super().__init__()
        value_dim = head_dim if value_dim is None else value_dim
        for name, val in (("d_model", d_model), ("n_heads", n_heads), ("head_dim", head_dim),
                          ("value_dim", value_dim), ("chunk_size", chunk_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"HLAAttention: {name} must be an int >= 1, got {val!r}")
        if variant not in VARIANTS:
            raise ValueError(f"HLAAttention: unknown HLA variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if backend not in BACKENDS:
            raise ValueError(f"HLAAttention: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.eps = check_scalar("eps", eps)
        self.ridge = check_scalar("ridge", ridge)
        if self.ridge != 0.0 and variant != "hla2":
            raise ValueError(f"HLAAttention: ridge={ridge} is only defined for variant 'hla2', not {variant!r}")
        given = [decay] if not isinstance(decay, (list, tuple)) else list(decay)
        self.decay = tuple(decay_values(given, n_heads, variant)[:len(given)])   # 1 or H floats
        self.d_model, self.n_heads, self.head_dim, self.value_dim = d_model, n_heads, head_dim, value_dim
        self.variant, self.normalize = variant, bool(normalize)
        self.qk_norm, self.backend, self.chunk_size = bool(qk_norm), backend, chunk_size
        H, d, dv = n_heads, head_dim, value_dim
        self.q_proj = nn.Linear(d_model, H * d, bias=bias)
        self.k_proj = nn.Linear(d_model, H * d, bias=bias)
        self.v_proj = nn.Linear(d_model, H * dv, bias=bias)
        self.head_norm = RMSNorm(dv, norm_eps) if head_norm else None
        self.o_proj = nn.Linear(H * dv, d_model, bias=bias)

    @property
    def state_size(self) -> int:
        """N, the per-head length of the state (docs/OP_CONTRACT.md, State layout)."""
        return state_size(self.variant, self.head_dim, self.value_dim, self.normalize, self.ridge)

    def init_state(self, batch_size: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The zero state [batch_size, H, N] (a fresh sequence)."""
        device = self.q_proj.weight.device if device is None else device
        return torch.zeros(batch_size, self.n_heads, self.state_size, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
                f"value_dim={self.value_dim}, variant={self.variant!r}, decay={list(self.decay)}, "
                f"normalize={self.normalize}, eps={self.eps}, ridge={self.ridge}, qk_norm={self.qk_norm}, "
                f"backend={self.backend!r}")

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None, *, return_state: bool = True
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [B, T, d_model], state [B, H, N] or None -> (y [B, T, d_model], state [B, H, N]).

        return_state=False returns (y, None) (needed by backend "naive", which has no state).
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"HLAAttention: x must be [B, T, d_model={self.d_model}], got {got}")
        B, T, _ = x.shape
        H, d, dv = self.n_heads, self.head_dim, self.value_dim
        q = self.q_proj(x).view(B, T, H, d)                                   # [B, T, H, d]
        k = self.k_proj(x).view(B, T, H, d)                                   # [B, T, H, d]
        v = self.v_proj(x).view(B, T, H, dv)                                  # [B, T, H, dv]
        if self.qk_norm:
            q, k = l2_normalize(q), l2_normalize(k)
        q, k, v = _autocast_operands(q, k, v)                                 # bf16 under bf16 autocast
        decay = self.decay[0] if len(self.decay) == 1 else list(self.decay)
        o, new_state = hla_attention(q, k, v, variant=self.variant, decay=decay, normalize=self.normalize,
                                     eps=self.eps, ridge=self.ridge, initial_state=state,
                                     output_final_state=return_state, backend=self.backend,
                                     chunk_size=self.chunk_size)              # [B, T, H, dv], [B, H, N]
        if self.head_norm is not None:
            o = self.head_norm(o)
        return self.o_proj(o.reshape(B, T, H * dv)), new_state
