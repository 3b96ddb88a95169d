"""Operands of the matrix products: which dtype feeds tl.dot, and the float16 power-of-two rescale.

Forward kernels (chunk_fwd.py, chunk_ahla.py), two constexpr flags set by the launch plan:

- IEEE (float32 inputs): float32 operands, input_precision="ieee".
- F16 (float16 inputs): every product with the state or a product of it ("grows with the
  sequence": S, C ~ t, M ~ t^2 with decay 1) goes through `dot_big_left` / `dot_big_right`, which
  scale each row (left operand) or column (right operand) of the float32 tile by a power of two
  2^e that puts its largest magnitude in [2^14, 2^15) before the cast to float16, multiply on the
  tensor cores (float32 accumulation), and multiply the result's rows / columns by 2^-e. A power
  of two changes only the exponent, so the scaled product is the product of the same float16
  mantissas: the result is the one a float16 with float32's exponent range would give (README.md,
  "Operand precision"). e is clamped to [-63, 63]: full normalisation for row/column maxima in
  [2^-49, 2^78); smaller ones keep the factor 2^63, larger ones overflow as an unscaled cast would.
- neither (bfloat16 inputs): the float32 tile is cast to bfloat16 (float32's range).

Bounded, chunk-local products (Q K^T, W, Wg, diag(b) V, Q^T diag(b) V, W^T diag(b) V) take
operands in the input dtype directly.

Backward kernels (chunk_bwd.py, chunk_ahla.py's bwd): host-side choice `state_operand_dtype` /
`state_precision` (float32 IEEE operands for float16 inputs; the backward was not changed).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def dot(a, b, IEEE: tl.constexpr):
    """a @ b with float32 accumulation; IEEE: float32 operands multiplied in IEEE float32."""
    if IEEE:
        r = tl.dot(a, b, input_precision="ieee")
    else:
        r = tl.dot(a, b)
    return r


@triton.jit
def _pow2(e):
    """2^e as float32, exactly (int32 e in [-126, 127]): the exponent field written directly."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _fp16_exponent(amax):
    """int32 e with amax * 2^e in [2^14, 2^15) (float16's largest value is 65504), in [-63, 63]."""
    e_max = ((amax.to(tl.int32, bitcast=True) >> 23) & 255) - 127     # floor(log2(amax)), amax normal
    return tl.minimum(tl.maximum(14 - e_max, -63), 63)


@triton.jit
def dot_big_left(a, b, F16: tl.constexpr, IEEE: tl.constexpr):
    """a @ b: a [M, K] float32 grows with the sequence, b [K, N] in the dot dtype (bounded).
    F16: rows of a scaled by powers of two into float16's range, the result's rows scaled back."""
    if F16:
        e = _fp16_exponent(tl.max(tl.abs(a), axis=1))                     # [M]
        r = tl.dot((a * _pow2(e)[:, None]).to(tl.float16), b)
        r = r * _pow2(-e)[:, None]
    else:
        r = dot(a.to(b.dtype), b, IEEE)
    return r


@triton.jit
def dot_big_right(a, b, F16: tl.constexpr, IEEE: tl.constexpr):
    """a @ b: a [M, K] in the dot dtype (bounded), b [K, N] float32 grows with the sequence.
    F16: columns of b scaled by powers of two into float16's range, the result's columns back."""
    if F16:
        e = _fp16_exponent(tl.max(tl.abs(b), axis=0))                     # [N]
        r = tl.dot(a, (b * _pow2(e)[None, :]).to(tl.float16))
        r = r * _pow2(-e)[None, :]
    else:
        r = dot(a, b.to(a.dtype), IEEE)
    return r


def state_operand_dtype(dtype: torch.dtype):
    """Backward kernels: operand dtype (SDT) of the products with the state, its gradient or a
    product of them. float16 inputs: float32 (the state outgrows float16's 65504: issue 12);
    bfloat16 has float32's range and keeps its own operands; float32 is float32 already."""
    if dtype == torch.float16:
        return tl.float32
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float32


def input_precision(dtype: torch.dtype) -> str:
    """Backward kernels: input_precision of the products of bounded, input-dtype operands."""
    return "ieee" if dtype == torch.float32 else "tf32"


def state_precision(dtype: torch.dtype) -> str:
    """Backward kernels: input_precision (SPREC) of the SDT products: IEEE float32 for float16 inputs.
    Not TF32, whose 10-bit mantissa is float16's: at T = 1030 (d = 64, normalize, Triton
    interpreter) dO rounded to float16 before these products gave dq 9.4e-3 relative RMS off the
    float64 reference (large terms of the normaliser's gradient cancel); float32 operands
    throughout give 3.3e-4. bfloat16: bf16 operands."""
    return "ieee" if dtype in (torch.float16, torch.float32) else "tf32"
